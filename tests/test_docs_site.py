"""The docs site builds without a warning and says what the code does; the package is
ready for an index.

What cannot drift is generated (the settings table); what is written by hand is held to
the code here: every ``OTAS_*`` name the pages mention is a setting, every version they
pin is the package's, the demo's output they show is what the demo prints.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from otas_capture import __version__
from otas_capture.config import Config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# OTAS_* names that are not settings of the middleware: the test suite's own knobs.
NOT_SETTINGS = {"OTAS_UPDATE_SCREENSHOT", "OTAS_DIFFERENTIAL_EXAMPLES", "OTAS_USER_TOKEN"}


def _hook():
    spec = importlib.util.spec_from_file_location("otas_docs", ROOT / "docs/hooks/otas_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metadata() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser["metadata"]


# -- the site ----------------------------------------------------------------------------


def test_mkdocs_builds_the_site_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs-material) is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    reference = (tmp_path / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "OTAS_RELEASE" in reference and "settings-table" not in reference
    architecture = (tmp_path / "architecture" / "index.html").read_text(encoding="utf-8")
    assert "The path of one request" in architecture  # ARCHITECTURE.md, included


def test_every_page_is_in_the_navigation():
    navigation = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert {page for page in pages if f": {page}" not in navigation} == set()


def test_the_settings_table_has_every_setting_with_its_default_in_order():
    rows = _hook().settings()
    settings = [f.name for f in dataclasses.fields(Config) if f.name != "env_refused"]
    assert [row["option"] for row in rows] == settings
    assert [row["variable"] for row in rows] == ["OTAS_" + name.upper() for name in settings]
    assert all(row["meaning"] for row in rows)
    by_name = {row["option"]: row for row in rows}
    assert by_name["timeout"]["default"] == f"`{Config().timeout}`"
    assert by_name["sample_rate"]["accepts"] == "a number from 0 to 1"


def test_every_otas_variable_the_pages_mention_is_a_setting():
    settings = {"OTAS_" + f.name.upper() for f in dataclasses.fields(Config)}
    mentioned = {
        (name, page.name)
        for page in PAGES
        for name in re.findall(r"\bOTAS_[A-Z_]+[A-Z]\b", page.read_text(encoding="utf-8"))
    }
    unknown = {pair for pair in mentioned if pair[0] not in settings | NOT_SETTINGS}
    assert unknown == set()


def test_the_versions_the_pages_pin_are_the_packages():
    pinned = {
        (version, page.name)
        for page in PAGES
        for version in re.findall(r"otas_capture-(\d+\.\d+\.\d+)-", page.read_text("utf-8"))
    }
    assert pinned and {version for version, _ in pinned} == {__version__}


def test_the_pages_use_the_repository_address_of_the_package():
    source = _metadata()["url"]
    addresses = {
        match
        for page in [*PAGES, ROOT / "mkdocs.yml", ROOT / "CHANGELOG.md"]
        for match in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", page.read_text("utf-8"))
    }
    assert {address.removesuffix(".git") for address in addresses} == {source}


def test_the_demo_prints_what_the_pages_show(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "otas_capture", "demo", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = _rows(result.stdout)
    assert printed
    for page in (ROOT / "README.md", ROOT / "docs" / "demo.md"):
        assert _rows(page.read_text(encoding="utf-8")) == printed, page.name


def _rows(text: str) -> list[list[str]]:
    """The demo's table, without the latency column (it varies from run to run)."""
    lines = text[text.index("method  path") :].split("\n")[2:]
    rows = []
    for line in lines:
        if not line.strip() or line.startswith("```"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows.append(cells[:3] + cells[4:])
    return rows


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = next(line for line in readme.split("\n") if "pip install -q -e '.[test]'" in line)
    tail = command[command.index("pip install") :]
    assert tail in (ROOT / ".ci" / "run").read_text(encoding="utf-8").split("\n")


# -- the package -------------------------------------------------------------------------


def test_the_package_declares_what_an_index_shows():
    metadata = _metadata()
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert metadata["license"] == "MIT" and metadata["license_files"] == "LICENSE"
    assert metadata["version"] == "attr: otas_capture._version.__version__"
    assert metadata["author"] and "Source" in metadata["project_urls"]
    assert "Development Status" in metadata["classifiers"]
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_wheel_holds_the_viewer_and_the_license(tmp_path):
    pytest.importorskip("build", reason="the build package is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is absent from the `packages` configuration" not in result.stdout + result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "app.css"):
        assert f"otas_capture/collector/static/{name}" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert not any("__pycache__" in name for name in names)
