"""MkDocs hook: the parts of the docs that are written from the code, at every build.

- ``<!-- settings-table -->`` becomes the table of every setting: its environment
  variable, option, default and what it accepts, read from ``Config`` (names, order and
  defaults), from ``OtasMiddleware``'s ``:param`` lines (what each one means) and from the
  settings' own checks (what a value must be: the text of the ``ConfigError`` a wrong
  value gets). A setting added to the code appears here without anyone editing a page.
- ``<!-- include: PATH -->`` becomes the file at ``PATH`` (from the repository's root),
  so that ``ARCHITECTURE.md`` and ``CHANGELOG.md`` have one home and still show here.

``tests/test_docs_site.py`` builds the site with ``mkdocs build --strict`` and checks the
table against ``Config``.
"""

from __future__ import annotations

import dataclasses
import html
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the checkout's package, whether installed or not
    sys.path.insert(0, str(ROOT))

_INCLUDE = re.compile(r"<!-- include: (?P<path>[\w./-]+) -->")
_PARAM = re.compile(r":param (?P<name>\w+): (?P<text>.*?)(?=\n\s*(?::param |\n)|\Z)", re.S)
# Any value no setting accepts: its ConfigError says what the setting does accept.
_PROBE = object()


def on_page_markdown(markdown: str, **_: Any) -> str:
    if "<!-- settings-table -->" in markdown:
        markdown = markdown.replace("<!-- settings-table -->", settings_table())
    return _INCLUDE.sub(lambda match: _included(match["path"]), markdown)


def _included(path: str) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    # The page has its own title: the file's first heading would be a second one.
    return re.sub(r"\A# [^\n]*\n", "", text).strip() + "\n"


def settings() -> list[dict[str, str]]:
    """Every setting, in ``Config``'s order, as the rows of the reference table."""
    from otas_capture import OtasMiddleware
    from otas_capture.config import Config, ConfigError

    meanings = {
        match["name"]: " ".join(match["text"].split())
        for match in _PARAM.finditer(OtasMiddleware.__doc__ or "")
    }
    defaults = Config()
    rows = []
    for field in dataclasses.fields(Config):
        if field.name not in meanings:
            continue  # not a setting (Config.env_refused)
        try:
            Config.load({field.name: _PROBE}, {})
            accepts = ""
        except ConfigError as error:
            accepts = _accepts(error.detail)
        except Exception:  # a check that does not word its refusal: say nothing
            accepts = ""
        rows.append(
            {
                "variable": "OTAS_" + field.name.upper(),
                "option": field.name,
                "default": _default(field.name, getattr(defaults, field.name)),
                "meaning": meanings[field.name],
                "accepts": accepts,
            }
        )
    return rows


def _accepts(detail: str) -> str:
    """``must be X, got Y; why`` -> ``X``."""
    text = detail.removeprefix("must be ")
    return text.split(", got ")[0].split("; ")[0]


def _default(name: str, value: Any) -> str:
    if value is None or value == () or value == frozenset():
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, frozenset):
        return "the built-in list"
    return f"`{value}`"


def _markdown(text: str) -> str:
    """reST's ``code`` as Markdown's `code`; ``<`` outside code as text, not a tag."""
    pieces = text.replace("``", "`").split("`")
    for index in range(0, len(pieces), 2):  # the even pieces are outside code spans
        pieces[index] = html.escape(pieces[index], quote=False)
    return "`".join(pieces)


def settings_table() -> str:
    lines = [
        "| variable, option | default | meaning | a value must be |",
        "|---|---|---|---|",
    ]
    for row in settings():
        cells = [f"`{row['variable']}`<br>`{row['option']}=`", row["default"]]
        cells += [_markdown(row["meaning"]), _markdown(row["accepts"])]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
