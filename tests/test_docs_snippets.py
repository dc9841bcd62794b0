"""Every code block in the README and the docs runs, or is checked, as written.

A reader copies a snippet and expects it to work, so each fenced block is put to work by
its language:

- ``python``: executed, in a fresh namespace, with no ``OTAS_*`` variable set (so
  nothing is shipped anywhere). An HTML comment just before the block changes that:
  ``<!-- snippet: continue -->`` runs it in the namespace of the page's previous block;
  ``<!-- snippet: pytest [DIR] -->`` runs it as a test module with pytest (inside a
  copy of DIR, such as the example Django project, when given), the ``otas`` fixture
  and all; ``<!-- snippet: needs MODULE... -->`` runs it when those modules import, and
  only compiles it otherwise; ``<!-- snippet: compile (why) -->`` only compiles it.
- ``bash``: parsed by ``bash -n``; each command must be one the docs are allowed to
  use, an ``otas-capture`` subcommand and its options must exist, ``pip install`` extras
  must be declared, scripts of the repository must exist and take the options given.
- ``json``, ``yaml``, ``toml``, ``ini``, ``dockerfile``: parsed.
- ``text``: output and file contents, shown, not run.

A block without a language, or in another one, fails: each must say what it is.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from otas_capture.config import check_names

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_MARKER = re.compile(r"<!-- snippet: (?P<kind>\w+)(?P<args>[^>]*?)\s*-->")

# Commands a snippet may start with: what a reader of these pages is expected to have.
ALLOWED_COMMANDS = {
    ".", "apt-get", "cd", "command", "curl", "docker", "export", "flask", "gunicorn",
    "mkdocs", "mypy", "otas-capture", "pip", "pytest", "python", "python3", "ruff", "twine",
    "uvicorn", "uwsgi", "waitress-serve", "hypercorn",
}  # fmt: skip


@dataclass
class Block:
    path: Path
    line: int
    language: str
    code: str
    kind: str = "run"
    args: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("```"):
            index += 1
            continue
        language = line[3:].strip()
        end = lines.index("```", index + 1)
        block = Block(path, index + 1, language, "\n".join(lines[index + 1 : end]) + "\n")
        before = next((text for text in reversed(lines[:index]) if text.strip()), "")
        marker = _MARKER.fullmatch(before.strip())
        if marker:
            block.kind = marker["kind"]
            args = marker["args"].strip()
            block.args = [] if args.startswith("(") else args.split()
        found.append(block)
        index = end + 1
    return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks_of(path)]


def blocks(language: str, *kinds: str) -> list[Any]:
    return [
        pytest.param(block, id=block.where)
        for block in ALL_BLOCKS
        if block.language == language and (not kinds or block.kind in kinds)
    ]


@pytest.fixture
def no_otas_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("OTAS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_block_says_what_language_it_is():
    known = {"python", "bash", "json", "yaml", "toml", "ini", "dockerfile", "text"}
    assert [b.where for b in ALL_BLOCKS if b.language not in known] == []


def test_every_marker_is_one_the_runner_knows():
    kinds = {"run", "continue", "pytest", "needs", "compile"}
    assert [b.where for b in ALL_BLOCKS if b.kind not in kinds] == []


# -- python ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in DOCUMENTS])
def test_python_blocks_run(path, no_otas_environment):
    namespace: dict[str, Any] = {}
    for block in blocks_of(path):
        if block.language != "python" or block.kind not in ("run", "continue", "needs"):
            continue
        code = compile(block.code, block.where, "exec")
        if block.kind == "needs" and not all(_importable(name) for name in block.args):
            continue  # compiled above; runs once those modules exist
        if block.kind != "continue":
            namespace = {"__name__": "docs_snippet"}
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"{block.where} fails: {error!r}") from error
        if isinstance(namespace.get("OTAS"), dict):  # Django settings: each key a setting
            keys = {key.lower() for key in namespace["OTAS"]} - {"capture_user"}
            check_names(dict.fromkeys(keys))


@pytest.mark.parametrize("block", blocks("python", "compile"))
def test_python_blocks_that_need_an_app_compile(block):
    compile(block.code, block.where, "exec")


@pytest.mark.parametrize("block", blocks("python", "pytest"))
def test_test_examples_pass_under_pytest(block, tmp_path):
    where = tmp_path
    if block.args:  # the test belongs in a project: a copy of it
        where = tmp_path / "project"
        shutil.copytree(ROOT / block.args[0], where, ignore=shutil.ignore_patterns("__pycache__"))
        where = where / "tests"
    (where / "test_from_docs.py").write_text(block.code, encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTAS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_docs.py"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


# -- bash --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks("bash"))
def test_shell_blocks_parse(block):
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert result.returncode == 0, f"{block.where}: {result.stderr}"


@pytest.mark.parametrize("block", blocks("bash"))
def test_shell_commands_exist_with_the_options_given(block):
    for words in _commands(block.code):
        assert words[0] in ALLOWED_COMMANDS, f"{block.where}: unexpected command {words[0]!r}"
        if words[0] == "otas-capture":
            _check_subcommand(block, words[1:])
        elif words[0] == "pip" and "install" in words:
            _check_extras(block, words)
        elif words[0] in ("python", "python3"):
            _check_python(block, words[1:])


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a block: lines joined, comments off, split at && ; |."""
    text = code.replace("\\\n", " ")
    commands = []
    for line in text.split("\n"):
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("{", "}"):  # a group: its commands are checked one by one
                continue
            if word in ("&&", "||", ";", "|"):
                if current:
                    commands.append(current)
                current = []
            elif not (not current and "=" in word and word[0].isupper()):
                current.append(word)  # (a leading VAR=value is not the command)
    return commands


@cache
def _help(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "otas_capture", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _check_subcommand(block: Block, args: list[str]) -> None:
    if not args or args[0].startswith("-"):
        assert set(args) <= {"--help", "--version"}, f"{block.where}: {args}"
        return
    text = _help(args[0])
    for option in (arg.split("=")[0] for arg in args[1:] if arg.startswith("--")):
        assert option in text, f"{block.where}: otas-capture {args[0]} has no {option}"


@cache
def _declared_extras() -> frozenset[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return frozenset(parser["options.extras_require"])


def _check_extras(block: Block, words: list[str]) -> None:
    for word in words:
        extras = re.search(r"\[([\w,-]+)\]", word)
        if extras:
            unknown = set(extras[1].split(",")) - _declared_extras()
            assert not unknown, f"{block.where}: no extra {unknown} in setup.cfg"


def _check_python(block: Block, args: list[str]) -> None:
    if not args:
        return
    if args[0] == "-c":
        compile(args[1], block.where, "exec")
    elif args[0] == "-m":
        assert _importable(args[1]), f"{block.where}: no module {args[1]}"
    elif "/" in args[0] and args[0].endswith(".py"):  # (manage.py is the reader's own)
        script = ROOT / args[0]
        assert script.is_file(), f"{block.where}: no script {args[0]}"
        source = script.read_text(encoding="utf-8")
        for option in (arg.split("=")[0] for arg in args[1:] if arg.startswith("--")):
            assert f'"{option}"' in source, f"{block.where}: {args[0]} takes no {option}"


# -- data and configuration files --------------------------------------------------------


@pytest.mark.parametrize("block", blocks("json"))
def test_json_blocks_parse(block):
    json.loads(block.code)


@pytest.mark.parametrize("block", blocks("yaml"))
def test_yaml_blocks_parse(block):
    yaml = pytest.importorskip("yaml")
    assert list(yaml.safe_load_all(block.code))


@pytest.mark.parametrize("block", blocks("toml"))
def test_toml_blocks_parse(block):
    tomllib = pytest.importorskip("tomllib")
    tomllib.loads(block.code)


@pytest.mark.parametrize("block", blocks("ini"))
def test_ini_blocks_parse(block):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(block.code)
    assert parser.sections()


DOCKERFILE_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE",
    "ENTRYPOINT", "VOLUME", "LABEL", "HEALTHCHECK", "STOPSIGNAL", "SHELL",
}  # fmt: skip


@pytest.mark.parametrize("block", blocks("dockerfile"))
def test_dockerfiles_are_made_of_instructions(block):
    lines = [line for line in block.code.split("\n") if line and not line.startswith("#")]
    assert lines[0].startswith("FROM ")
    assert {line.split()[0] for line in lines} <= DOCKERFILE_INSTRUCTIONS
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert json.loads(cmd[3:]), "the exec form, so that SIGTERM reaches Python"
