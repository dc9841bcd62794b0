"""XML and HTML: the text of an element with a sensitive name (also CDATA, also cut at
the capture limit), and the value of an HTML ``<input>`` with one."""

from __future__ import annotations

import re

from .found import Found
from .names import REDACTED
from .rule import Rule

__all__ = ["mask_elements"]

# <password>x</password>, <ns:ApiKey attr="1">x</ns:ApiKey>: the text up to the next tag,
# or to the end of the kept text when the body was cut.
_ELEMENT = re.compile(
    r"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)(?:\s[^<>]*)?>"
    r"((?:<!\[CDATA\[.*?(?:\]\]>|\Z)|[^<]+)+)",
    re.DOTALL,
)


def mask_elements(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Mask the text of every XML or HTML element with a sensitive name, and the value of
    every HTML ``<input>`` with one."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if not rule.field(match.group(1)) or not match.group(2).strip():
            return match.group()
        content = match.group(2)
        found.add(content)
        if "<![CDATA[" in content:
            found.add(content.replace("<![CDATA[", "").replace("]]>", ""))
        changed = True
        return match.group()[: match.start(2) - match.start()] + REDACTED

    def replace_input(match: re.Match[str]) -> str:
        nonlocal changed
        tag = match.group()
        name = _INPUT_NAME.search(tag)
        value = _INPUT_VALUE.search(tag)
        if name is None or value is None or not rule.field(name.group(2)):
            return tag
        found.add(value.group(2))
        changed = True
        return tag[: value.start(2)] + REDACTED + tag[value.end(2) :]

    masked = _ELEMENT.sub(replace, text)
    if "<input" in masked or "<INPUT" in masked:
        masked = _INPUT.sub(replace_input, masked)
    return (masked if changed else text), changed


# <input type="hidden" name="csrfmiddlewaretoken" value="...">: a form field in HTML.
_INPUT = re.compile(r"<input\b[^<>]*>", re.IGNORECASE)
_INPUT_NAME = re.compile(r"""\sname\s*=\s*(["']?)([^"'\s>]*)\1""", re.IGNORECASE)
_INPUT_VALUE = re.compile(r"""\svalue\s*=\s*(["']?)([^"'>]*?)\1(?=[\s/>]|$)""", re.IGNORECASE)
