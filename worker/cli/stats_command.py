"""`python -m worker stats`: placeholder until the statistics engine lands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="statistics calculator (JSON on stdin)")
    parser.set_defaults(handler=lambda args: 0)
