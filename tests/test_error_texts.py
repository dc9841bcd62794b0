"""Specification: error texts keep their secrets.

The table below is made by the real libraries: each case provokes the error (a
constraint, a validation, a failed request) with a secret as the input and takes the
text the library writes. PostgreSQL's driver is not installed here, so its cases are
the DETAIL lines its documentation and Django's ``IntegrityError`` show, written out.
Every case says which secrets must not survive and which parts must stay as written.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, NamedTuple

import marshmallow
import pydantic
import pydantic.v1
import pytest
import requests
import sqlalchemy
import urllib3

from otas_capture.event.masking import REDACTED, Found, Rule, mask_text

from .test_event import build, exchange
from .test_redaction import MASKED, NOT_MASKED

RULE = Rule()
KEY = "sk_live_4f9a8b7c6d5e"
TOKEN = "tok_9c8b7a6f5e4d"
PASSWORD = "hunter2-Secret-77"


class Case(NamedTuple):
    text: str
    hidden: tuple[str, ...]  # must not survive
    kept: tuple[str, ...]  # must stay as written


def provoked(make: Callable[[], Any]) -> str:
    try:
        make()
    except Exception as error:  # the library's own text for its own error
        return str(error)
    raise AssertionError("the library raised nothing")


# -- databases ----------------------------------------------------------------------------

POSTGRES = {
    "unique violation, as Django's IntegrityError": Case(
        'duplicate key value violates unique constraint "accounts_user_api_key_key"\n'
        f"DETAIL:  Key (api_key)=({KEY}) already exists.\n",
        (KEY,),
        ('"accounts_user_api_key_key"', "Key (api_key)=(", ") already exists."),
    ),
    "token column": Case(
        f"DETAIL:  Key (token)=({TOKEN}) already exists.", (TOKEN,), ("Key (token)=(",)
    ),
    "two columns, one secret": Case(
        f"DETAIL:  Key (tenant_id, api_key)=(42, {KEY}) already exists.",
        (KEY,),
        ("Key (tenant_id, api_key)=(42, ",),
    ),
    "foreign key": Case(
        f'DETAIL:  Key (session_token)=({TOKEN}) is not present in table "sessions".',
        (TOKEN,),
        ('is not present in table "sessions".',),
    ),
    "expression index": Case(
        f"DETAIL:  Key (lower(api_key::text))=({KEY}) already exists.", (KEY,), ()
    ),
    "a column that is no secret": Case(
        "DETAIL:  Key (email)=(bob@example.com) already exists.",
        (),
        ("Key (email)=(bob@example.com) already exists.",),
    ),
    "two columns, no secret": Case(
        "DETAIL:  Key (tenant_id, slug)=(42, acme) already exists.",
        (),
        ("Key (tenant_id, slug)=(42, acme) already exists.",),
    ),
}

# MySQL's messages (ER_DUP_ENTRY 1062, ER_TRUNCATED_WRONG_VALUE_FOR_FIELD 1366), as
# mysqlclient and PyMySQL print them.
MYSQL = {
    "duplicate entry, MySQL 8": Case(
        f"(1062, \"Duplicate entry '{KEY}' for key 'users.api_key'\")",
        (KEY,),
        ("for key 'users.api_key'", "(1062, "),
    ),
    "duplicate entry, named index": Case(
        f"(1062, \"Duplicate entry '{TOKEN}' for key 'users_reset_token_unique'\")",
        (TOKEN,),
        ("users_reset_token_unique",),
    ),
    "wrong value for a column": Case(
        f"(1366, \"Incorrect integer value: '{KEY}' for column 'api_key' at row 1\")",
        (KEY,),
        ("for column 'api_key' at row 1",),
    ),
    "duplicate entry that is no secret": Case(
        "(1062, \"Duplicate entry 'bob@example.com' for key 'users.email'\")",
        (),
        ("Duplicate entry 'bob@example.com' for key 'users.email'",),
    ),
    "duplicate primary key": Case(
        "(1062, \"Duplicate entry '42' for key 'PRIMARY'\")", (), ("Duplicate entry '42'",)
    ),
}


def sqlite_duplicate() -> str:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE users (id INTEGER, api_key TEXT UNIQUE)")
    db.execute("INSERT INTO users VALUES (1, ?)", (KEY,))
    return provoked(lambda: db.execute("INSERT INTO users VALUES (2, ?)", (KEY,)))


def sqlalchemy_errors() -> dict[str, Case]:
    engine = sqlalchemy.create_engine("sqlite://")
    tables = sqlalchemy.MetaData()
    users = sqlalchemy.Table(
        "users",
        tables,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("name", sqlalchemy.String),
        sqlalchemy.Column("api_key", sqlalchemy.String, unique=True),
    )
    teams = sqlalchemy.Table(
        "teams",
        tables,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("name", sqlalchemy.String),
    )
    tables.create_all(engine)
    with engine.begin() as db:
        db.execute(teams.insert(), [{"id": 1, "name": "blue"}])
        db.execute(users.insert(), [{"id": 1, "name": "bob", "api_key": KEY}])
        db.execute(users.insert(), [{"id": 2, "name": "al", "api_key": "other"}])

    def failing(statement: Any, rows: Any = None) -> str:
        def run() -> None:
            with engine.begin() as db:
                db.execute(statement, rows)

        return provoked(run)

    return {
        "SQLAlchemy insert": Case(
            failing(users.insert().values(id=3, name="carol", api_key=KEY)),
            (KEY,),
            ("UNIQUE constraint failed: users.api_key", "(3, 'carol', "),
        ),
        "SQLAlchemy update": Case(
            failing(users.update().where(users.c.id == 2).values(api_key=KEY)),
            (KEY,),
            ("[parameters: ('[REDACTED]', 2)]",),
        ),
        "SQLAlchemy executemany": Case(
            failing(
                users.insert(),
                [
                    {"id": 4, "name": "dan", "api_key": "fresh"},
                    {"id": 5, "name": "eve", "api_key": KEY},
                ],
            ),
            (KEY,),
            ("(4, 'dan', '[REDACTED]'), (5, 'eve', ",),
        ),
        "SQLAlchemy, no secret column": Case(
            failing(teams.insert().values(id=1, name="red")),
            (),
            ("UNIQUE constraint failed: teams.id", "[parameters: (1, 'red')]"),
        ),
    }


# -- validation ---------------------------------------------------------------------------


class Billing(pydantic.BaseModel):
    api_key: int
    page: int


class Signup(pydantic.BaseModel):
    email: str
    password: int
    billing: Billing


def pydantic_v2() -> pydantic.ValidationError:
    try:
        Signup.model_validate(
            {"email": 5, "password": PASSWORD, "billing": {"api_key": KEY, "page": "two"}}
        )
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("no validation error")


class LegacySignup(pydantic.v1.BaseModel):
    api_key: str
    page: int

    @pydantic.v1.validator("api_key")
    def live(cls, value: str) -> str:  # noqa: N805 (pydantic's signature)
        raise ValueError(f"{value!r} is not a live key")


def revoked(value: str) -> None:
    raise marshmallow.ValidationError(f"{value} was revoked")  # quotes the input


class SignupSchema(marshmallow.Schema):
    email = marshmallow.fields.Email()
    token = marshmallow.fields.String(validate=revoked)


VALIDATION = {
    "pydantic v2": Case(
        str(pydantic_v2()),
        (PASSWORD, KEY),
        (
            "validation errors for Signup",
            "billing.api_key\n  Input should be a valid integer",
            "input_value=5",  # email: no secret
            "input_value='two'",  # billing.page: no secret
        ),
    ),
    "pydantic v2 errors() as JSON (FastAPI's 422 answer)": Case(
        pydantic_v2().json(), (PASSWORD, KEY), ('"two"', '"api_key"')
    ),
    "pydantic v2 errors() as a repr": Case(
        repr(pydantic_v2().errors()), (PASSWORD, KEY), ("'two'", "'api_key'")
    ),
    "pydantic v1 with a validator that quotes the input": Case(
        provoked(lambda: LegacySignup(api_key=KEY, page="two")),
        (KEY,),
        ("api_key\n  ", "is not a live key", "page\n  value is not a valid integer"),
    ),
    "marshmallow": Case(
        provoked(lambda: SignupSchema().load({"email": "nope", "token": TOKEN})),
        (TOKEN,),
        ("'email': ['Not a valid email address.']", "'token': ["),
    ),
}

DJANGO_SCRIPT = """
import json, django
from django.conf import settings
settings.configure(USE_I18N=False)
django.setup()
from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
class Signup(forms.Form):
    email = forms.EmailField()
    api_key = forms.IntegerField()
    token = forms.ChoiceField(choices=[("a", "a")])
form = Signup({"email": "nope", "api_key": %(key)r, "token": %(token)r})
form.is_valid()
print(json.dumps({
    "as_text": form.errors.as_text(),
    "html": str(form.errors),
    "as_json": form.errors.as_json(),
    "ValidationError": str(ValidationError(form.errors)),
    "QueryDict": repr(QueryDict("user=bob&password=%(password)s")),
}))
"""


def django_texts() -> dict[str, str]:
    script = DJANGO_SCRIPT % {"key": KEY, "token": TOKEN, "password": PASSWORD}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    texts: dict[str, str] = json.loads(out.stdout)
    return texts


DJANGO = {
    f"Django form {kind}": Case(text, (TOKEN,), ("Enter a valid email address.",))
    for kind, text in django_texts().items()
    if kind != "QueryDict"
}
DJANGO["Django QueryDict"] = Case(django_texts()["QueryDict"], (PASSWORD,), ("'user': ['bob']",))


# -- HTTP clients ------------------------------------------------------------------------


class Refuses(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def http_errors() -> dict[str, Case]:
    server = HTTPServer(("127.0.0.1", 0), Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        refused = requests.get(f"{base}/v1/me?access_token={TOKEN}&page=2", timeout=5)
        status = provoked(refused.raise_for_status)
    finally:
        server.shutdown()
        server.server_close()
    query = f"?api_key={KEY}&token={TOKEN}&page=2"
    unreachable = provoked(lambda: requests.get(f"http://127.0.0.1:1/v1/x{query}", timeout=5))
    pool = urllib3.PoolManager(retries=0)
    pooled = provoked(lambda: pool.request("GET", f"http://127.0.0.1:1/x?client_secret={KEY}"))
    return {
        "requests HTTPError": Case(status, (TOKEN,), ("401 Client Error", "page=2")),
        "requests ConnectionError": Case(
            unreachable, (KEY, TOKEN), ("Max retries exceeded", "&page=2")
        ),
        "urllib3 MaxRetryError": Case(pooled, (KEY,), ("Max retries exceeded",)),
    }


CASES = {**POSTGRES, **MYSQL, **sqlalchemy_errors(), **VALIDATION, **DJANGO, **http_errors()}


def test_the_cases_hold_what_they_say():
    """The libraries did put the secret in their text (else the case proves nothing)."""
    for name, case in CASES.items():
        for secret in case.hidden:
            assert secret in case.text, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_texts_of_real_libraries_keep_their_secrets(name):
    case = CASES[name]
    found = Found()
    masked, changed = mask_text(case.text, RULE, found)
    for secret in case.hidden:
        assert secret not in masked, masked
        # Kept to be scrubbed from the rest of the event (alone, or in the message it was in).
        assert any(secret in value for value in found.values)
    assert changed == bool(case.hidden)
    for part in case.kept:
        assert part in masked, masked


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_error_text_is_masked_in_the_event_wherever_it_shows(name):
    case = CASES[name]
    ex = exchange(
        status="500 Internal Server Error",
        response_headers=[("Content-Type", "text/plain")],
        response_body=case.text.encode(),
        limit=64 * 1024,
    )
    ex.error = case.text
    event = build(ex)
    for field in ("error", "response_body"):
        for secret in case.hidden:
            assert secret not in event[field], (field, event[field])
    if not case.hidden:
        assert event["error"] == case.text


def test_sqlite_names_the_column_but_never_the_value():
    text = sqlite_duplicate()
    assert text == "UNIQUE constraint failed: users.api_key"
    assert mask_text(text, RULE, Found()) == (text, False)


def test_a_validation_error_under_a_field_that_is_no_secret_is_kept_whole():
    text = provoked(lambda: Billing(api_key=7, page="two"))
    assert mask_text(text, RULE, Found()) == (text, False)


def test_masking_a_masked_error_changes_nothing_more():
    for case in CASES.values():
        once = mask_text(case.text, RULE, Found())[0]
        assert mask_text(once, RULE, Found())[0] == once
        assert REDACTED in once or not case.hidden


# -- the names table, through the error formats ---------------------------------------

SECRET = "Secret-Value-123"
NAMES = [(name, True) for name in MASKED] + [(name, False) for name in NOT_MASKED]


def pydantic_error_for(name: str) -> str:
    model = pydantic.create_model("Model", field=(int, pydantic.Field(alias=name)))
    return provoked(lambda: model.model_validate({name: SECRET}))


ERROR_FORMATS = {
    "pydantic v2": pydantic_error_for,
    "PostgreSQL": lambda name: f"DETAIL:  Key ({name})=({SECRET}) already exists.",
    "MySQL": lambda name: f"(1062, \"Duplicate entry '{SECRET}' for key 'users.{name}'\")",
    "Django as_text": lambda name: (
        f"* {name}\n  * Select a valid choice. {SECRET} is not one of the available choices."
    ),
    "a repr with a list": lambda name: f"{{'{name}': ['{SECRET}']}}",
}


@pytest.mark.parametrize("error_format", sorted(ERROR_FORMATS))
def test_an_error_masks_the_value_exactly_for_the_names_the_rule_masks(error_format):
    wrong = []
    for name, masked in NAMES:
        text = ERROR_FORMATS[error_format](name)
        shown = mask_text(text, RULE, Found())[0]
        if (SECRET not in shown) != masked:
            wrong.append((name, shown))
    assert not wrong
