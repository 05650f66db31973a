"""The results pages' templates: shipped with the package, autoescaped, strict."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from worker.api.ui.render import error_page, render

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_and_static_file_is_package_data() -> None:
    """An installed package has only the files pyproject's package-data names."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["worker"]
    ui = ROOT / "worker" / "api" / "ui"
    files = [path for folder in ("templates", "static") for path in (ui / folder).iterdir()]
    assert any(path.suffix == ".html" for path in files)
    for path in files:
        relative = path.relative_to(ROOT / "worker").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in globs), relative


def test_text_is_escaped() -> None:
    page = error_page(400, "<script>alert('x')</script> & more")
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page
    assert "&amp; more" in page


def test_a_name_missing_from_the_view_is_an_error() -> None:
    with pytest.raises(UndefinedError):
        render("error.html", status_code=404)
