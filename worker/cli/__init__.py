"""The command-line interface; `worker.cli.main` wires the subcommands together."""
