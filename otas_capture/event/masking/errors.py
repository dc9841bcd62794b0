"""Error texts that name a field in one place and quote its value in another.

The formats real stacks produce, each masked where the field it names is sensitive:

- PostgreSQL's constraint detail (what Django's and SQLAlchemy's ``IntegrityError``
  carry): ``Key (api_key)=(sk_live_...) already exists.``, also for several columns;
- MySQL's ``Duplicate entry 'sk_live_...' for key 'users.api_key'`` and ``Incorrect
  integer value: '...' for column 'api_key' at row 1`` (SQLite names no value);
- validation errors that put the field on one line and the message under it, indented:
  pydantic v2 (``input_value='...'``), pydantic v1 and Django's ``as_text()``
  (``* token`` then ``  * Select a valid choice. <value> is not one of ...``);
  Django's HTML error list; pydantic's ``errors()`` as a repr, whose ``'input'`` follows
  the ``'loc'`` naming the field (as JSON it is masked with the JSON);
- SQLAlchemy's ``[SQL: ...]`` and ``[parameters: (...)]``: the parameters of sensitive
  columns, matched to the placeholders of the statement;
- a sensitive name followed by a list, as a Python repr prints it (marshmallow's and
  Django's error dicts, a ``QueryDict``): ``'password': ['...']``.

In a message under a sensitive field only what can carry the value is masked (the
``input_value``, quoted text, the value Django's choice error repeats), so the message
stays readable. URLs with query strings (``requests``' and ``urllib3``'s errors) need
nothing of their own: their ``name=value`` pairs are masked as everywhere.
"""

from __future__ import annotations

import ast
import re
from typing import Callable

from .found import Found
from .names import REDACTED
from .rule import Rule

__all__ = [
    "mask_constraint_details",
    "mask_error_lists",
    "mask_field_blocks",
    "mask_listed_values",
    "mask_loc_inputs",
    "mask_sql_parameters",
]


def _substitute(
    pattern: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]
) -> tuple[str, bool]:
    masked = pattern.sub(replace, text)
    return masked, masked != text


def _hide(value: str, found: Found) -> str:
    found.add(value.strip("'\"“”"))
    return REDACTED


# -- database constraint details ---------------------------------------------------------

# Key (a, b)=(1, x) already exists. / is not present in table / conflicts with existing key
_PG_KEY = re.compile(
    r"\b([Kk]ey \()([^\n]*?)(\)=\()([^\n]*?)(\)(?= already exists| is not present"
    r"| is still referenced| conflicts with|\.?[ \t]*$))",
    re.MULTILINE,
)
_MYSQL_DUPLICATE = re.compile(r"(Duplicate entry ')(.*?)(' for key '([^'\n]*)')")
_MYSQL_VALUE = re.compile(
    r"(Incorrect [\w ]{1,40} value: ')(.*?)(' for column [`'\"]?([^\s`'\"]+))"
)


def mask_constraint_details(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Mask the values a database repeats in a constraint error for sensitive columns."""

    def postgres(match: re.Match[str]) -> str:
        names = match.group(2).split(", ")
        values = match.group(4).split(", ")
        sensitive = [rule.field(name) for name in names]
        if not any(sensitive):
            return match.group()
        if len(values) == len(names):
            shown = ", ".join(_hide(v, found) if s else v for v, s in zip(values, sensitive))
        else:  # a value holding ", ": which part is which cannot be told
            shown = _hide(match.group(4), found)
        return match.group(1) + match.group(2) + match.group(3) + shown + match.group(5)

    def mysql(match: re.Match[str]) -> str:
        # 'users.api_key': MySQL 8 puts the table before the index or column name.
        if not rule.field(match.group(4).rsplit(".", 1)[-1]):
            return match.group()
        return match.group(1) + _hide(match.group(2), found) + match.group(3)

    changed = False
    if "ey (" in text:
        text, changed = _substitute(_PG_KEY, text, postgres)
    for pattern in (_MYSQL_DUPLICATE, _MYSQL_VALUE):
        text, found_here = _substitute(pattern, text, mysql)
        changed = changed or found_here
    return text, changed


# SQLAlchemy's errors: [SQL: INSERT INTO users (id, api_key) VALUES (?, ?)] and, on the
# next line, [parameters: (2, 'sk_live_...')], the values in the placeholders' order.
_SQL = re.compile(r"\[SQL: (.*?)\]\n\[parameters: ([^\n]*)\]$", re.DOTALL | re.MULTILINE)
_INSERT = re.compile(r"INSERT INTO \S+ \(([^)]*)\) VALUES \(([^)]*)\)", re.IGNORECASE)
_COMPARED = re.compile(r"([\w.\"`]+)\s*(?:=|<>|!=|[<>]=?|\bLIKE)\s*(?:\?|%s)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\?|%s")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.]*")


def _placeholder_names(sql: str) -> list[str] | None:
    """The column each placeholder of ``sql`` stands for, in order; None when unknown."""
    count = len(_PLACEHOLDER.findall(sql))
    insert = _INSERT.search(sql)
    values = insert.group(2).split(",") if insert is not None else []
    if insert is not None and all(_PLACEHOLDER.fullmatch(v.strip()) for v in values):
        columns = [c.strip() for c in insert.group(1).split(",")]
        if count % len(columns) == 0:  # several rows: VALUES (?, ?), (?, ?)
            return columns * (count // len(columns))
    names = [m.group(1) for m in _COMPARED.finditer(sql)]
    return names if len(names) == count else None


def mask_sql_parameters(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """SQLAlchemy: the parameters of sensitive columns (all of them when which placeholder
    is which cannot be told and the statement names a sensitive column)."""

    def replace(match: re.Match[str]) -> str:
        sql, shown = match.group(1), match.group(2)
        names = _placeholder_names(sql)
        try:
            values = ast.literal_eval(shown)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            values = None
        # One row of values, or a list of rows (executemany).
        rows = [values] if isinstance(values, tuple) else values
        if (
            isinstance(rows, list)
            and names is not None
            and all(isinstance(row, tuple) and len(row) == len(names) for row in rows)
        ):
            sensitive = [rule.field(name.strip('"`')) for name in names]
            if not any(sensitive):
                return match.group()
            kept = [
                tuple(_hide(str(v), found) if s else v for v, s in zip(row, sensitive))
                for row in rows
            ]
            new = repr(kept[0] if isinstance(values, tuple) else kept)
            return match.group()[: match.start(2) - match.start()] + new + "]"
        if isinstance(values, dict):
            return match.group()  # named parameters: masked as name: value pairs
        if not any(rule.field(word) for word in _IDENTIFIER.findall(sql)):
            return match.group()
        return match.group()[: match.start(2) - match.start()] + _hide(shown, found) + "]"

    return _substitute(_SQL, text, replace)


# -- validation errors: the field, then its messages -------------------------------------

# A field's line (pydantic: "user.api_key"; Django's as_text: "* api_key") and the
# indented lines of its messages under it.
_BLOCK = re.compile(r"^(\* )?([^\s*][^\n]{0,200})\n((?:[ \t]+[^\n]*(?:\n|\Z))+)", re.MULTILINE)
_INPUT_VALUE = re.compile(r"(input_value=)(.*?)(?=, input_type=)")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|“[^”\n]*”")
_DJANGO_CHOICE = re.compile(
    r"(Select a valid choice\. )(.+?)( is not one of the available choices)"
)


def _mask_messages(text: str, found: Found) -> str:
    """Messages about a sensitive field with what can carry its value masked."""
    text = _INPUT_VALUE.sub(lambda m: m.group(1) + _hide(m.group(2), found), text)
    text = _DJANGO_CHOICE.sub(lambda m: m.group(1) + _hide(m.group(2), found) + m.group(3), text)
    return _QUOTED.sub(
        lambda m: _hide(m.group(), found) if m.group() != f"'{REDACTED}'" else m.group(), text
    )


def mask_field_blocks(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """pydantic v1/v2 and Django ``as_text()``: messages under a sensitive field's line."""

    def replace(match: re.Match[str]) -> str:
        if not rule.field(match.group(2)):
            return match.group()
        return match.group()[: match.start(3) - match.start()] + _mask_messages(
            match.group(3), found
        )

    return _substitute(_BLOCK, text, replace)


# <li>token<ul class="errorlist" id="id_token_error"><li>message</li></ul></li>
_ERROR_LIST = re.compile(
    r'(<li>([^<>]{1,200})<ul class="errorlist"[^>]*>)(.*?)(</ul>|\Z)', re.DOTALL
)


def mask_error_lists(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Django's HTML error list: the messages of a sensitive field."""

    def replace(match: re.Match[str]) -> str:
        if not rule.field(match.group(2)):
            return match.group()
        return match.group(1) + _mask_messages(match.group(3), found) + match.group(4)

    return _substitute(_ERROR_LIST, text, replace)


# {'type': 'int_parsing', 'loc': ('body', 'api_key'), 'msg': '...', 'input': 'sk_...'}
_LOC_INPUT = re.compile(
    r"""(['"]loc['"]:\s*[(\[]([^()\[\]\n]*)[)\]][^{}\n]*?['"]input['"]:\s*)"""
    r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|[^\s,{}\[\]()]+)"""
)


def mask_loc_inputs(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """pydantic's ``errors()`` printed: the ``input`` of an error whose ``loc`` ends in a
    sensitive name."""

    def replace(match: re.Match[str]) -> str:
        names = [part.strip(" '\"") for part in match.group(2).split(",") if part.strip()]
        if not names or not rule.field(names[-1]):
            return match.group()
        quote_mark = match.group(3)[:1] if match.group(3)[:1] in ("'", '"') else ""
        return match.group(1) + quote_mark + _hide(match.group(3), found) + quote_mark

    return _substitute(_LOC_INPUT, text, replace)


# 'password': ['hunter2'] in a repr; the list is the value, each item masked whole.
_LISTED = re.compile(r"""(['"])([^'"\n]{1,100})\1(:\s*\[)([^\[\]\n]*)(\])""")
_ITEM = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|[^\s,'"]+""")


def mask_listed_values(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """A sensitive name followed by a list, as Python prints a dict: every item masked."""

    def item(match: re.Match[str]) -> str:
        value = match.group()
        if value.strip("'\"") == REDACTED:
            return value
        quote_mark = value[:1] if value[:1] in ("'", '"') else ""
        return quote_mark + _hide(value, found) + quote_mark

    def replace(match: re.Match[str]) -> str:
        if not match.group(4).strip() or not rule.field(match.group(2)):
            return match.group()
        items = _ITEM.sub(item, match.group(4))
        return match.group()[: match.start(4) - match.start()] + items + match.group(5)

    return _substitute(_LISTED, text, replace)
