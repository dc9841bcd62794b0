"""Keeping secrets out of events: which names are credentials, and masking their values.

One module, one job:

- :mod:`.names`: the built-in sensitive header and field names, and the markers;
- :mod:`.vocabulary`: the one table of words that make a name a credential;
- :mod:`.rule`: the name rule, per configuration; :mod:`.precheck`: whether a text
  can hold a name the rule masks at all (read from the same table);
- :mod:`.text`: JSON (whole, cut, or inside JSON strings), then the table of other
  formats: :mod:`.pairs` (``name=value``, ``name: value``), :mod:`.markup` (XML, HTML),
  :mod:`.errors` (database, validation and form errors), :mod:`.nameless` (URL
  passwords, PEM keys); :mod:`.forms` (forms, query strings, multipart) and
  :mod:`.headers`;
- :mod:`.found`: the values removed, scrubbed from the rest of the event.

These are pure functions, run by the sender thread, never on the request path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .names import BUILTIN_SENSITIVE_FIELDS, BUILTIN_SENSITIVE_HEADERS, REDACTED, TOO_DEEP

if TYPE_CHECKING:
    from .forms import looks_like_form, mask_form, mask_multipart
    from .found import Found, Scrubber
    from .headers import redact_header
    from .markup import mask_elements
    from .nameless import mask_private_keys, mask_userinfo
    from .pairs import mask_assignments, mask_labels
    from .rule import Rule, is_credential, split_words
    from .text import mask_cut_json, mask_json, mask_text

# The module of each public name. config.py imports this package for the list of names
# when the app starts; the maskers are most of the event builder's import time and are
# loaded on first use, by the first middleware that ships.
_HOMES = {
    **dict.fromkeys(("looks_like_form", "mask_form", "mask_multipart"), "forms"),
    **dict.fromkeys(("Found", "Scrubber"), "found"),
    "redact_header": "headers",
    "mask_elements": "markup",
    **dict.fromkeys(("mask_private_keys", "mask_userinfo"), "nameless"),
    **dict.fromkeys(("mask_assignments", "mask_labels"), "pairs"),
    **dict.fromkeys(("Rule", "is_credential", "split_words"), "rule"),
    **dict.fromkeys(("mask_cut_json", "mask_json", "mask_text"), "text"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILTIN_SENSITIVE_FIELDS",
    "BUILTIN_SENSITIVE_HEADERS",
    "REDACTED",
    "TOO_DEEP",
    "Found",
    "Rule",
    "Scrubber",
    "is_credential",
    "looks_like_form",
    "mask_assignments",
    "mask_cut_json",
    "mask_elements",
    "mask_form",
    "mask_json",
    "mask_labels",
    "mask_multipart",
    "mask_private_keys",
    "mask_text",
    "mask_userinfo",
    "redact_header",
    "split_words",
]
