"""Installing the services' commands from Debian packages: what runs, and the errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from worker.errors import ProvisioningError
from worker.services import debian_packages


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """A machine where apt-get exists and "installing" a package creates its command in
    a bin folder on PATH; returns the commands run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(debian_packages, "_updated", False)
    monkeypatch.setattr(debian_packages.os, "geteuid", lambda: 0)
    ran: list[list[str]] = []
    provides = {"openjdk-17-jre-headless": "java", "maven": "mvn"}

    def run(step: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        ran.append(step)
        if step[1] == "install":
            command = bin_dir / provides[step[-1]]
            command.write_text("")
            command.chmod(0o755)
        return subprocess.CompletedProcess(step, 0, "", "")

    monkeypatch.setattr(debian_packages.subprocess, "run", run)
    return ran


def test_a_missing_command_is_installed_with_one_update(
    machine: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    java = debian_packages.ensure_command("java", "openjdk-17-jre-headless", "Kafka")
    mvn = debian_packages.ensure_command("mvn", "maven", "jars")
    assert java.endswith("/java") and mvn.endswith("/mvn")
    assert [step[:2] for step in machine] == [
        ["apt-get", "update"],
        ["apt-get", "install"],
        ["apt-get", "install"],
    ]
    assert [step[-1] for step in machine[1:]] == ["openjdk-17-jre-headless", "maven"]
    out = capsys.readouterr().out
    assert "Installing Debian's openjdk-17-jre-headless package for java" in out
    assert "done: mvn at" in out


def test_a_present_command_installs_nothing(machine: list[list[str]]) -> None:
    assert debian_packages.ensure_command("apt-get", "apt", "x").endswith("/apt-get")
    assert machine == []


def test_not_root_names_the_command_to_run(
    machine: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(debian_packages.os, "geteuid", lambda: 1000)
    with pytest.raises(ProvisioningError) as raised:
        debian_packages.ensure_command("java", "openjdk-17-jre-headless", "Kafka runs on Java 17")
    assert str(raised.value) == (
        "java is not installed and cannot be installed here (not root, or no apt-get): run "
        "'apt-get install -y openjdk-17-jre-headless' as root and run again; "
        "Kafka runs on Java 17."
    )
    assert machine == []


def test_a_failed_install_says_which_step(
    machine: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(step: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(step, 100, "", "E: Unable to locate package maven")

    monkeypatch.setattr(debian_packages.subprocess, "run", fail)
    with pytest.raises(ProvisioningError, match="'apt-get update -q' failed: E: Unable"):
        debian_packages.ensure_command("mvn", "maven", "jars")
