"""``name=value`` and ``name: value`` pairs in free text: the value of a sensitive name.

``name=value`` as in URLs, matrix parameters and logs; ``name: value`` with the name bare
or in single quotes (YAML, GraphQL arguments, a Python repr in an error message), and
``name = value`` and ``name => value``; an ``Authorization: Bearer <token>`` line masks
the credential after its scheme.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from .found import Found
from .names import REDACTED
from .rule import Rule

__all__ = ["mask_assignments", "mask_labels"]

_ASSIGNMENT = re.compile(
    r"(?<![\w.\[\]%+-])([\w.\[\]%+-]+)=(\"[^\"]*\"?|'[^']*'?|[^&#;,\s\"'<>()]*)"
)


# A statement's placeholder (api_key=? in SQL, as an error quotes it) holds no value.
_PLACEHOLDERS = ("?", "%s")


def mask_assignments(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Mask the value of every ``name=value`` pair of a sensitive name in free text."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        value = match.group(2)
        if value in _PLACEHOLDERS or not rule.field(unquote_plus(match.group(1))):
            return match.group()
        found.add(value.strip("\"'"))
        found.add(unquote_plus(value.strip("\"'")))
        changed = True
        return match.group(1) + "=" + REDACTED

    masked = _ASSIGNMENT.sub(replace, text)
    return (masked if changed else text), changed


# name: value with the name bare or in single quotes (double-quoted names are JSON's):
# a Python repr in an error message ({'password': 'x'}), GraphQL arguments
# (login(password: "x")), YAML and log lines (password: x).
_LABEL = re.compile(
    r"(?<![\w\".\[\]-])('[^'\n]{1,100}'|[A-Za-z_][\w.\[\]-]{0,100})[ \t]*(?::|=>?)[ \t]*"
    r"(\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?"
    # Authorization: Bearer <token>: the scheme and the credential after it.
    r"|(?i:bearer|basic|digest|token|bot)[ \t]+[^\s,;'\"]+"
    r"|[^\s,;{}\[\]()'\"]+)"
)


def mask_labels(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Mask the value of every ``name: value`` pair of a sensitive bare or quoted name."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        value = match.group(2)
        if value in _PLACEHOLDERS or not rule.field(match.group(1).strip("'")):
            return match.group()
        quote_mark = value[:1] if value[:1] in ("'", '"') else ""
        words = value.strip("'\"").split()
        found.add(value.strip("'\""))
        if len(words) > 1:
            found.add(words[-1])  # the credential after its scheme
        changed = True
        return match.group()[: match.start(2) - match.start()] + quote_mark + REDACTED + quote_mark

    masked = _LABEL.sub(replace, text)
    return (masked if changed else text), changed
