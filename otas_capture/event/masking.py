"""Keeping secrets out of events: which names are credentials, and masking their values.

A field or header is masked by what its name *means*, not by an exact list. The name is
split into words (``newPassword``, ``new_password``, ``new-password``, ``user.password``
and ``user[password][]`` all give ``new``/``user`` and ``password``), and the words are
read like an English compound, whose last noun says what it is:

- a word that names a credential (``password``, ``secret``, ``token``, ``cookie``, ``cvv``,
  ``otp``, ``ssn``...) or a pair that does (``api key``, ``private key``, ``card number``,
  ``session id``, ``security code``...) marks the name as sensitive;
- unless a word after the last such mark says the value is *about* the credential
  rather than the credential (``token_type``, ``password_hint``, ``token_count``,
  ``password_expires_at``), or the first word makes it a flag or a count
  (``is_secret``, ``has_password``, ``max_token``).

``token`` counts only in the singular: ``max_tokens`` and ``prompt_tokens`` are counts.
The words and the exceptions are in the tables below; ``tests/test_redaction.py`` holds
the table of names that must and must not be masked.

Users add names (``OTAS_SENSITIVE_FIELDS``: masked when a name ends with their words) and
exempt names (``OTAS_SAFE_FIELDS``: never masked by the rule when a name has exactly their
words). Header names follow the same rule, plus a standard list that is always redacted.

Values are masked wherever such a name appears: at any depth of a JSON document (also
JSON that was cut at the capture limit, and JSON kept as a string inside JSON), in forms
and query strings (``&`` or ``;``), in multipart form fields, in ``name=value`` pairs of
header values (a token in a ``Referer`` or ``Location`` URL) and of free text, in
``name: value`` pairs of free text (YAML, GraphQL arguments, a Python repr in an error)
in ``name = value`` and ``name => value`` pairs, in XML elements (also CDATA), in
``{"name": ..., "value": ...}`` pairs (a Kubernetes env var); and, whatever names them,
the password of a URL with credentials (``postgres://user:pw@host``) and the body of a
PEM private key. Every value
removed is also collected, so that the event builder can scrub it from every other field
of the same event (a password the response echoes, a token quoted in an error message).

These are pure functions, run by the sender thread, never on the request path.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

from ..contract import AGENT_KEY_HEADER, SDK_KEY_HEADER, SESSION_TOKEN_HEADER

REDACTED = "[REDACTED]"
TOO_DEEP = "[REDACTED: nested too deep to inspect]"
_MAX_DEPTH = 64

# Headers redacted whatever their name's words say (their names are not all compounds
# the rule reads as credentials: "Cookie" is, "X-Api-Key" is, but keeping the list
# explicit documents it and guards it).
STANDARD_SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "authentication",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        SDK_KEY_HEADER.lower(),
        SESSION_TOKEN_HEADER.lower(),
        AGENT_KEY_HEADER.lower(),
    }
)

# -- the rule ---------------------------------------------------------------------------

# Words that name a credential on their own.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "passcode",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "creds",
        "authorization",
        "authorisation",
        "cookie",
        "cookies",
        "csrf",
        "xsrf",
        "jwt",
        "cvv",
        "cvc",
        "otp",
        "totp",
        "hotp",
        "ssn",
        "pin",
        "pincode",
    }
)
# Single words that glue a compound together (as HTTP and some frameworks spell them).
_GLUED = frozenset(
    {
        "apikey",
        "privatekey",
        "secretkey",
        "accesskey",
        "authkey",
        "sessionid",
        "jsessionid",
        "phpsessid",
        "sessid",
        "sessionkey",
        "cardnumber",
        "ccnumber",
        "ccnum",
        "creditcard",
    }
)
# A glued word ending in one of these (newpassword, clientsecret, csrfmiddlewaretoken).
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "pwd")
# "<qualifier> key" is a credential: api key, private key; not public, primary or sort key.
_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "private",
        "secret",
        "access",
        "signing",
        "encryption",
        "master",
        "session",
        "client",
        "auth",
        "license",
        "licence",
        "app",
        "consumer",
        "shared",
        "hmac",
        "ssh",
    }
)
# "<qualifier> code" is a one-time or security code: mfa code, security code, auth code.
_CODE_QUALIFIERS = frozenset(
    {
        "security",
        "mfa",
        "fa",  # 2fa
        "tfa",
        "otp",
        "totp",
        "verification",
        "recovery",
        "backup",
        "auth",
        "authorization",
        "sms",
        "pin",
        "access",
        "reset",
        "confirmation",
    }
)
_CARD_WORDS = frozenset({"card", "cc"})
# "<word> pass" that is a ticket or a result, not a password.
_NOT_PASSWORDS = frozenset(
    {"boarding", "bus", "day", "season", "hall", "free", "ticket", "event", "test", "first"}
)
_NUMBER_WORDS = frozenset({"number", "num", "no", "nr"})
# Words that, after the credential, make the name about the credential, not the value.
_DESCRIPTORS = frozenset(
    {
        "type",
        "types",
        "kind",
        "count",
        "counts",
        "length",
        "len",
        "size",
        "limit",
        "limits",
        "max",
        "min",
        "minimum",
        "maximum",
        "name",
        "names",
        "hint",
        "hints",
        "policy",
        "policies",
        "strength",
        "expires",
        "expiry",
        "expiration",
        "exp",
        "expired",
        "ttl",
        "lifetime",
        "age",
        "duration",
        "timeout",
        "interval",
        "at",
        "on",
        "time",
        "date",
        "timestamp",
        "created",
        "updated",
        "changed",
        "modified",
        "required",
        "requirement",
        "requirements",
        "enabled",
        "disabled",
        "set",
        "present",
        "exists",
        "valid",
        "invalid",
        "validity",
        "status",
        "state",
        "url",
        "uri",
        "endpoint",
        "path",
        "field",
        "fields",
        "label",
        "placeholder",
        "format",
        "pattern",
        "regex",
        "rule",
        "rules",
        "version",
        "mode",
        "method",
        "methods",
        "scheme",
        "provider",
        "providers",
        "usage",
        "used",
        "remaining",
        "index",
        "idx",
        "prefix",
        "suffix",
        "last",
        "masked",
        "redacted",
        "id",
        "ids",
        "error",
        "errors",
        "message",
        "issued",
        "issuer",
        "audience",
        "scope",
        "scopes",
        "revoked",
        "verified",
        "confirmed",
        "sent",
        "consent",
        "banner",
        "domain",
        "secure",
        "httponly",
        "samesite",
        "arn",
        "location",
        "supported",
        "optional",
        "provided",
        "visible",
        "hidden",
        "strategy",
        "algorithm",
        "alg",
        "encoding",
        "digits",
        "attempts",
        "retries",
        "rotation",
        "rotated",
    }
)
# A first word that makes the whole name a flag or a count: is_secret, max_token.
_NEGATING_PREFIXES = frozenset(
    {
        "is",
        "has",
        "have",
        "no",
        "num",
        "n",
        "max",
        "min",
        "total",
        "count",
        "show",
        "hide",
        "require",
        "requires",
        "use",
        "uses",
        "enable",
        "disable",
        "allow",
        "allows",
        "need",
        "needs",
        "can",
        "should",
        "must",
    }
)

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_NAME_CACHE_LIMIT = 4096
_CACHED_NAME_LENGTH = 100


def split_words(name: str) -> tuple[str, ...]:
    """The lower-case words of a name in any spelling: snake, camel, kebab, dotted, ``a[b]``."""
    return tuple(word.lower() for word in _WORD.findall(name))


def _is_mark(words: tuple[str, ...], i: int) -> bool:
    """Whether ``words[i]`` (with the word before it) names a credential."""
    word = words[i]
    before = words[i - 1] if i else ""
    last = i == len(words) - 1
    if word in _SECRET_WORDS or word in _GLUED:
        return True
    if word == "key":
        return before in _KEY_QUALIFIERS
    if word == "code":
        return before in _CODE_QUALIFIERS
    if word in _NUMBER_WORDS:
        return before in _CARD_WORDS or before == "security"  # social security number
    if word == "id":
        return before == "session"
    if word == "card":
        return last and before in ("credit", "debit")
    if word in ("pass", "pw"):
        # {"user": ..., "pass": ...}, db_pass; not boarding_pass or a test's pass count.
        return last and before not in _NOT_PASSWORDS
    if word in ("session", "auth"):
        # "session" and "auth" alone hold the credential; session_start, auth_type do not.
        return last
    if len(word) > 6 and word.endswith(_SECRET_SUFFIXES):
        return True
    return False


def is_credential(words: tuple[str, ...]) -> bool:
    """The built-in rule: whether a name made of ``words`` names a credential."""
    mark = -1
    for i in range(len(words)):
        if _is_mark(words, i):
            mark = i
    if mark < 0:
        return False
    for i in range(mark + 1, len(words)):
        # id_token_hint carries the ID token itself (OpenID Connect).
        if words[i] in _DESCRIPTORS and not (words[i] == "hint" and words[mark] == "token"):
            return False
    return not (mark > 0 and words[0] in _NEGATING_PREFIXES)


def _words_of_setting(names: Iterable[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(w for w in (split_words(n) for n in names) if w)


class Rule:
    """Which field and header names are sensitive, for one configuration.

    ``extra_fields`` are added (a name whose words end with theirs is masked),
    ``safe_fields`` exempted from the built-in rule (a name with exactly their words),
    ``extra_headers`` are always redacted. Results are cached per name.
    """

    def __init__(
        self,
        extra_fields: Iterable[str] = (),
        safe_fields: Iterable[str] = (),
        extra_headers: Iterable[str] = (),
    ) -> None:
        self._extra = _words_of_setting(extra_fields)
        self._safe = _words_of_setting(safe_fields)
        self._headers = _words_of_setting(STANDARD_SENSITIVE_HEADERS) | _words_of_setting(
            extra_headers
        )
        self._fields: dict[str, bool] = {}
        self._header_cache: dict[str, bool] = {}
        # A user's name is found by its last word (it may be glued to the others).
        extra_needles = {words[-1] for words in self._extra} - set(_NEEDLES)
        self._needles = _NEEDLES + tuple(sorted(extra_needles))
        # may_contain judges ASCII text word by word (runs of letters), remembering the
        # verdict of each word: a user's needle with other characters than letters
        # spans words and is searched for in the whole text instead.
        self._letter_needles = tuple(n for n in self._needles if n.isalpha() and n.isascii())
        self._odd_needles = tuple(n for n in self._needles if n not in self._letter_needles)
        self._plain_words: set[bytes] = set()
        self._word_verdicts: dict[bytes, int] = {}
        self._word_cache_bytes = 0

    @property
    def known_fields(self) -> dict[str, bool]:
        """The cache of :meth:`field`: name -> whether it is sensitive."""
        return self._fields

    def field(self, name: str) -> bool:
        """Whether the value of a field (JSON key, form or query key) called ``name`` is masked."""
        cached = self._fields.get(name)
        if cached is None:
            cached = self._field(split_words(name))
            if len(name) <= _CACHED_NAME_LENGTH:
                if len(self._fields) >= _NAME_CACHE_LIMIT:
                    self._fields.clear()
                self._fields[name] = cached
        return cached

    def _field(self, words: tuple[str, ...]) -> bool:
        if not words:
            return False
        if self._extra:
            # Indexes (password[0], a.0.b) do not change what a name is.
            core = words
            while len(core) > 1 and core[-1].isdigit():
                core = core[:-1]
            for extra in self._extra:
                if core[-len(extra) :] == extra:
                    return True
        if words in self._safe:
            return False
        return is_credential(words)

    def header(self, name: str) -> bool:
        """Whether the value of a header called ``name`` is redacted whole."""
        cached = self._header_cache.get(name)
        if cached is None:
            words = split_words(name)
            cached = words in self._headers or self._field(words)
            if len(name) <= _CACHED_NAME_LENGTH:
                if len(self._header_cache) >= _NAME_CACHE_LIMIT:
                    self._header_cache.clear()
                self._header_cache[name] = cached
        return cached

    def may_contain(self, text: str) -> bool:
        """False when no sensitive name can be in ``text``: it then needs no parsing.

        A sensitive name holds one of a few needles ("pass", "token", "key"); each hit
        is then looked at closely (``max_tokens`` holds "token" but is a count, "author"
        holds "auth"). A name spelled with JSON or percent escapes is only visible once
        parsed, so any escape at all means "maybe".

        Every needle is made of letters, so it lies inside one run of letters: ASCII
        text is split into those runs once, and each distinct run is judged once per
        rule (bodies of one API repeat the same keys event after event). Only a needle
        whose close look needs the neighbouring run ("api key", "card no") sends the
        whole text through the search for those few needles.
        """
        # One character first: finding it is a memchr, much cheaper than a substring.
        if ("\\" in text and "\\u" in text) or "%" in text:
            return True
        if "/" in text and "://" in text and _USERINFO.search(text):
            return True  # scheme://user:password@host names no field but holds one
        if "-----BEGIN" in text:
            return True  # maybe a PEM private key
        if not text.isascii():
            # str.lower() can turn other letters into ASCII ones (the Kelvin sign into k).
            return _search(text, self._needles)
        if self._odd_needles and _search(text, self._odd_needles):
            return True
        words = set(text.encode("ascii").translate(_LETTER_RUNS).split())
        unknown = words - self._plain_words
        if not unknown:
            return False
        across = False
        for word in unknown:
            verdict = self._word_verdicts.get(word)
            if verdict is None:
                verdict = self._judge_word(word)
            if verdict == _WORD_MAYBE:
                return True
            across = across or verdict == _WORD_ACROSS
        return across and _search(text, _ACROSS_NEEDLES)

    def _judge_word(self, word: bytes) -> int:
        """The verdict on one run of letters, remembered within a bound in bytes."""
        verdict = _word_verdict(word.decode("ascii"), self._letter_needles)
        if len(word) <= _WORD_CACHE_BYTES // 16:
            self._word_cache_bytes += len(word)
            if (
                self._word_cache_bytes > _WORD_CACHE_BYTES
                or len(self._plain_words) + len(self._word_verdicts) >= _NAME_CACHE_LIMIT
            ):
                self._plain_words.clear()
                self._word_verdicts.clear()
                self._word_cache_bytes = len(word)
            if verdict == _WORD_PLAIN:
                self._plain_words.add(word)
            else:
                self._word_verdicts[word] = verdict
        return verdict


# The runs of letters may_contain remembers: a few thousand words of an API's bodies,
# and the odd long run that recurs (padding, a repeated identifier), in 256 KiB at most.
_WORD_CACHE_BYTES = 256 * 1024


# What one run of letters says about the text around it.
_WORD_PLAIN, _WORD_MAYBE, _WORD_ACROSS = 0, 1, 2
# Keeps ASCII letters and turns every other byte into a space.
_LETTER_RUNS = bytes(c if 65 <= c <= 90 or 97 <= c <= 122 else 32 for c in range(256))


def _word_verdict(word: str, needles: Iterable[str]) -> int:
    """Whether a run of letters holds a possible name (_WORD_MAYBE), holds a needle whose
    close look depends on the run before or after it (_WORD_ACROSS), or neither (_WORD_PLAIN).

    The close looks of most needles read only the letters that follow the needle
    (``token`` but not ``tokens``), so the run alone decides. The others need a word
    before (``api key``, ``mfa code``, ``credit card``) or after (``card no``, ``cc
    num``, ``security code``), separated by up to three characters that are not
    letters or digits; when the needle sits at that edge of the run, only the whole
    text can tell.
    """
    across = False
    lowered = word.lower()
    for needle in needles:
        if needle not in lowered:
            continue
        precise = _PRECISE.get(needle)
        if precise is None or precise.search(word if needle in _CASED else lowered):
            return _WORD_MAYBE
        edges = _ACROSS_EDGES.get(needle)
        if edges is not None:
            before, after = edges
            # The needle may recur: any occurrence at the edge counts.
            across = across or (before and lowered.startswith(needle))
            across = across or (after and lowered.endswith(needle))
    return _WORD_ACROSS if across else _WORD_PLAIN


# Needles whose close look may read the run before (True, _) or after (_, True).
_ACROSS_EDGES = {
    "key": (True, False),
    "code": (True, False),
    "card": (True, True),
    "cc": (False, True),
    "security": (False, True),
}
_ACROSS_NEEDLES = tuple(_ACROSS_EDGES)


def _search(text: str, needles: Iterable[str]) -> bool:
    """Whether any of ``needles`` is in ``text`` (in any case) where its close look matches."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a letter that lower-cases to two: positions differ
        return any(needle in lowered for needle in needles)
    for needle in needles:
        start = lowered.find(needle)
        if start < 0:
            continue
        precise = _PRECISE.get(needle)
        if precise is None:
            return True
        seen = text if needle in _CASED else lowered
        for _ in range(_MAX_LOOKS):
            window = max(0, start - _WINDOW)
            if precise.search(seen, window, start + len(needle) + _WINDOW):
                return True
            start = lowered.find(needle, start + 1)
            if start < 0:
                break
        else:
            return True  # too many near misses to look at each: say maybe
    return False


def _any(words: Iterable[str]) -> str:
    return "(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")"


# Letters every sensitive name contains (lower case), in the order they are searched.
_NEEDLES = (
    "pass",
    "pw",
    "secret",
    "token",
    "cred",
    "auth",
    "cookie",
    "csrf",
    "xsrf",
    "jwt",
    "cvv",
    "cvc",
    "otp",
    "ssn",
    "pin",
    "sess",
    "key",
    "card",
    "cc",
    "code",
    "security",
)
# Between two words of a name: nothing (camel case), _ - . or a space, or "][" (a[b][c]).
_SEPARATOR = "[^a-z0-9]{0,3}"
# What must surround a needle for a name to be possible, where the needle alone is common.
# Most close looks read the lower-cased text. Those that rule a hit out by the letters
# after it (passenger, tokens, pinned) read the text as it is, the needle in any case
# and those letters in lower case only: they must continue the same word, and an
# upper-case letter starts a new one (pinNumber is "pin number", not "pinn...").
_PRECISE = {
    needle: re.compile(pattern)
    for needle, pattern in {
        "pass": r"(?i:pass)(?!eng|port|ive|age|ed|es|ing|ion)",
        "pw": r"(?i:pw)(?:[dD]|(?![a-z]))",
        "token": r"(?i:token)(?!s(?![a-z])|iz)",
        "cred": r"(?i:cred)(?!it)",
        "auth": r"(?i:auth)(?!or(?!i[sz])|ent)",
        "pin": r"(?i:pin)(?![gnei])",
        "sess": r"sess(?:ion|id)",
        "key": _any(_KEY_QUALIFIERS) + _SEPARATOR + "key",
        "card": r"card" + _SEPARATOR + r"n(?:um|o|r)|(?:credit|debit)" + _SEPARATOR + "card",
        "cc": "cc" + _SEPARATOR + r"n(?:um|o|r)",
        "code": _any(_CODE_QUALIFIERS) + _SEPARATOR + "code",
        "security": "security" + _SEPARATOR + r"(?:code|n(?:um|o|r))",
    }.items()
}
# The needles whose close look reads the text as it is, not lower-cased.
_CASED = frozenset({"pass", "pw", "token", "cred", "auth", "pin"})
_WINDOW = 24  # characters around a hit that can decide it
_MAX_LOOKS = 64


# -- what was removed -------------------------------------------------------------------

_MIN_SCRUB_LENGTH = 6
_MAX_FOUND = 512


class Found:
    """The values masking removed from one event, to be scrubbed from its other fields.

    Values shorter than six characters are not kept: ``true``, ``1`` or ``abc`` would
    match by chance all over the event. The count is bounded.
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any, depth: int = 0) -> None:
        if isinstance(value, str):
            text = value.strip()
            if len(text) >= _MIN_SCRUB_LENGTH and len(self.values) < _MAX_FOUND:
                self.values.add(text)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, (int, float)):
            self.add(str(value))
        elif depth > _MAX_DEPTH:
            return
        elif isinstance(value, dict):
            for item in value.values():
                self.add(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                self.add(item, depth + 1)

    def add_header(self, name: str, value: str) -> None:
        """A redacted header's value and the credential inside it."""
        self.add(value)
        lowered = name.lower()
        if lowered == "set-cookie":
            self.add(value.split(";", 1)[0].partition("=")[2])
        elif lowered == "cookie":
            for part in value.split(";"):
                self.add(part.partition("=")[2])
        else:
            scheme, _, credential = value.strip().partition(" ")
            if credential:
                self.add(credential)
                if scheme.lower() == "basic":
                    try:
                        decoded = base64.b64decode(credential.strip(), validate=True)
                        self.add(decoded.decode("utf-8", "replace").partition(":")[2])
                    except (binascii.Error, ValueError):
                        pass


# Characters that JSON and URL encoding leave as they are (tokens and keys are made of them).
_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")


def _spell(secret: str) -> tuple[str, ...]:
    """A secret as written, escaped in JSON text, and percent-encoded in a URL or a form."""
    if _PLAIN.fullmatch(secret):
        return (secret,)
    return (
        secret,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1],
        quote_plus(secret),
        quote(secret, safe=""),
        # JSON encoders that escape "/" (PHP's, some Java ones) write it as "\/".
        json.dumps(secret)[1:-1].replace("/", "\\/"),
    )


# What JSON text escapes when non-ASCII is kept: the quote, the backslash, control characters.
_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')

# The same secrets (a key, a session's token, its Authorization header) recur event after
# event: spell each once. Only short ones are cached, so the cache stays small.
_spellings = functools.lru_cache(maxsize=256)(_spell)


class Scrubber:
    """Replaces every known secret, in any spelling it may take in an event, with the marker."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) >= _MIN_SCRUB_LENGTH:
                variants.update(_spellings(secret) if len(secret) <= 512 else _spell(secret))
        variants.discard(REDACTED)
        # Longest first: a secret that contains another is replaced whole.
        self._variants = sorted(variants, key=len, reverse=True)
        self._shortest = len(self._variants[-1]) if self._variants else 0
        # A variant JSON would not escape shows in an encoded event exactly as written.
        self._verbatim_in_json = not any(map(_JSON_ESCAPED.search, self._variants))
        self._utf8 = [variant.encode("utf-8", "surrogatepass") for variant in self._variants]

    def __bool__(self) -> bool:
        return bool(self._variants)

    def absent_from_json(self, encoded: bytes) -> bool:
        """Whether scrubbing the strings of a value would change nothing, judged from
        ``encoded``, its UTF-8 JSON text (``ensure_ascii=False``; a string may hold JSON
        text in turn).

        True only when no secret can be in any of its strings; False means maybe. One
        search of the whole text is much cheaper than scrubbing each field, and events
        seldom hold a known secret outside the fields masking already replaced.
        """
        if not self._variants:
            return True
        if not self._verbatim_in_json:
            return False  # a secret with a quote or a control character: look closely
        for variant in self._utf8:
            if variant in encoded:
                return False
        return True

    def text(self, text: str) -> str:
        if len(text) < self._shortest:
            return text
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, REDACTED)
        return text

    def json(self, value: Any, depth: int = 0) -> Any:
        """A parsed-JSON-like value with its strings (not keys) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {key: self.json(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [self.json(item, depth + 1) for item in value]
        return value


# -- headers ----------------------------------------------------------------------------


def redact_headers(
    headers: Iterable[tuple[str, str]], rule: Rule, found: Found | None = None
) -> list[tuple[str, str]]:
    """Headers with every sensitive one's value replaced, and secrets in URLs masked."""
    found = Found() if found is None else found
    return [redact_header(name, value, rule, found)[0] for name, value in headers]


def redact_header(name: str, value: str, rule: Rule, found: Found) -> tuple[tuple[str, str], bool]:
    """One header, redacted or masked as :func:`redact_headers` does it, and whether it
    passed as it was (then it held nothing secret and ``found`` is unchanged)."""
    if rule.header(name):
        found.add_header(name, value)
        return (name, REDACTED), False
    if ("=" in value or ":" in value or "<" in value) and rule.may_contain(value):
        # Referer: https://app/cb?access_token=... ; Location: ...#access_token=...;
        # a debugging header holding JSON or "api_key: ..."; a URL with a password.
        return (name, mask_text(value, rule, found)[0]), False
    return (name, value), True


# -- name=value text: forms, query strings, URLs in header values, free text -------------

_PAIR_SEPARATOR = re.compile(r"[&;]")


def mask_form(text: str, rule: Rule, found: Found) -> tuple[str, list[tuple[str, str]], bool]:
    """Mask a URL-encoded form or query string (``&`` or ``;`` separated).

    Returns the text with only the sensitive values replaced (everything else byte for
    byte as sent), the decoded pairs (masked), and whether anything was masked.
    """
    if not text:
        return text, [], False
    pieces: list[str] = []
    pairs: list[tuple[str, str]] = []
    changed = False
    position = 0
    for separator in [*_PAIR_SEPARATOR.finditer(text), None]:
        end = separator.start() if separator else len(text)
        segment = text[position:end]
        if segment:
            raw_key, has_value, raw_value = segment.partition("=")
            key = _unquote(raw_key)
            value = _unquote(raw_value)
            if rule.field(key):
                found.add(value)
                found.add(raw_value)
                changed = True
                pieces.append(raw_key + "=" + REDACTED)
                pairs.append((key, REDACTED))
            else:
                if has_value and "=" in raw_value:
                    # A value holding its own pairs: next=/cb?token=...
                    masked, inner = mask_assignments(raw_value, rule, found)
                    if inner:
                        changed = True
                        raw_value = masked
                        value = unquote_plus(masked)
                elif value.lstrip()[:1] in ("{", "[") or "://" in value:
                    # A value holding JSON (payload={"password": ...}) or a URL with
                    # credentials (dsn=postgres://user:password@host).
                    masked, inner = mask_text(value, rule, found)
                    if inner:
                        changed = True
                        raw_value = quote_plus(masked)
                        value = masked
                pieces.append(raw_key + (("=" + raw_value) if has_value else ""))
                pairs.append((key, value))
        if separator is not None:
            pieces.append(separator.group())
            position = separator.end()
    return ("".join(pieces) if changed else text), pairs, changed


def _unquote(text: str) -> str:
    """``unquote_plus``, skipped for the usual text that has nothing to decode."""
    return unquote_plus(text) if "%" in text or "+" in text else text


_FORM_LIKE = re.compile(r"[^\s=&;]+=[^\s&;]*(?:[&;][^\s=&;]+(?:=[^\s&;]*)?)*\s*")


def looks_like_form(text: str) -> bool:
    """Whether a body without a content type is a URL-encoded form (``a=1&b=2``)."""
    return len(text) < 1_000_000 and _FORM_LIKE.fullmatch(text) is not None


_ASSIGNMENT = re.compile(
    r"(?<![\w.\[\]%+-])([\w.\[\]%+-]+)=(\"[^\"]*\"?|'[^']*'?|[^&#;,\s\"'<>()]*)"
)


def mask_assignments(text: str, rule: Rule, found: Found) -> tuple[str, bool]:
    """Mask the value of every ``name=value`` pair of a sensitive name in free text."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if not rule.field(unquote_plus(match.group(1))):
            return match.group()
        value = match.group(2)
        found.add(value.strip("\"'"))
        found.add(unquote_plus(value.strip("\"'")))
        changed = True
        return match.group(1) + "=" + REDACTED

    masked = _ASSIGNMENT.sub(replace, text)
    return (masked if changed else text), changed


# scheme://user:password@host (a database URL, a proxy): the password, up to the "@".
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@?#\"'<>]*:)([^/\s@?#\"'<>]+)@")


def mask_userinfo(text: str, found: Found) -> tuple[str, bool]:
    """Mask the password of every URL with credentials (``scheme://user:password@host``)."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if match.group(2) == REDACTED:
            return match.group()
        found.add(match.group(2))
        found.add(unquote_plus(match.group(2)))
        changed = True
        return match.group(1) + REDACTED + "@"

    masked = _USERINFO.sub(replace, text)
    return (masked if changed else text), changed


# -- multipart --------------------------------------------------------------------------

_PART_HEAD = re.compile(
    r"content-disposition:[ \t]*form-data;[^\r\n]*?\bname\*?=[ \t]*"
    r'(?:"([^"]*)"|([^;\s"]*))([^\r\n]*)'
    r"(?:\r?\n[^\r\n]+)*\r?\n\r?\n",
    re.IGNORECASE,
)
_PART_END = re.compile(r"\r?\n--")


def mask_multipart(text: str, rule: Rule, found: Found) -> tuple[str, list[tuple[str, str]], bool]:
    """Mask the form fields of a captured ``multipart/form-data`` body.

    A field's content runs to the next boundary line, or to the end of the kept text
    when the body was cut. Returns the text, the (name, value) pairs of its plain fields
    (files are left out) and whether anything was masked.
    """
    pieces: list[str] = []
    pairs: list[tuple[str, str]] = []
    changed = False
    position = 0
    for head in _PART_HEAD.finditer(text):
        if head.start() < position:
            continue  # inside a part already consumed
        end_match = _PART_END.search(text, head.end())
        end = end_match.start() if end_match else len(text)
        content = text[head.end() : end]
        name = head.group(1) if head.group(1) is not None else head.group(2)
        if "''" in name:  # name*=UTF-8''pass%77ord (RFC 5987)
            name = unquote_plus(name.split("''", 1)[1])
        is_file = "filename" in head.group(3).lower()
        if rule.field(name):
            found.add(content)
            pieces.append(text[position : head.end()] + REDACTED)
            changed = True
            if not is_file:
                pairs.append((name, REDACTED))
        else:
            pieces.append(text[position:end])
            if not is_file:
                pairs.append((name, content))
        position = end
    pieces.append(text[position:])
    return ("".join(pieces) if changed else text), pairs, changed


# -- parsed JSON ------------------------------------------------------------------------


def mask_json(value: Any, rule: Rule, found: Found | None = None) -> tuple[Any, bool]:
    """Mask sensitive keys at any depth of a parsed JSON value, in place; say whether any was.

    The value is changed where it holds a secret (it is the caller's freshly parsed
    copy: masking in place spares copying every body). A string that is itself JSON or
    holds ``name=value`` pairs (an API that wraps a payload as text) is masked inside.
    A container nested too deep to inspect is hidden whole.
    """
    found = Found() if found is None else found
    if isinstance(value, (dict, list)):
        return value, _mask_container(value, rule, found, 0)
    if isinstance(value, str):
        return _mask_string(value, rule, found, 0)
    return value, False


def _mask_string(value: str, rule: Rule, found: Found, depth: int) -> tuple[str, bool]:
    if (
        len(value) > 8
        # Only text holding JSON, name=value or name: value pairs, or XML elements can hide
        # a named secret.
        and ("=" in value or ":" in value or "<" in value or "-----BEGIN" in value)
        and rule.may_contain(value)
    ):
        return mask_text(value, rule, found, depth + 1)
    return value, False


def _mask_container(
    value: dict[Any, Any] | list[Any], rule: Rule, found: Found, depth: int
) -> bool:
    changed = False
    deeper = depth + 1
    known = rule.known_fields  # the rule's cache, read directly: this loop is hot
    target: Any = value  # indexable by the keys of either kind
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and (known.get(key) or (key not in known and rule.field(key))):
            found.add(item)
            target[key] = REDACTED
            changed = True
        elif isinstance(item, (dict, list)):
            if deeper > _MAX_DEPTH:
                # Too deep to inspect safely: hide it rather than risk shipping a secret.
                target[key] = TOO_DEEP
                changed = True
            elif _mask_container(item, rule, found, deeper):
                changed = True
        elif isinstance(item, str) and len(item) > 8:
            masked, masked_changed = _mask_string(item, rule, found, deeper)
            if masked_changed:
                target[key] = masked
                changed = True
    if isinstance(value, dict) and "value" in value:
        # {"name": "DB_PASSWORD", "value": ...}: a Kubernetes env var, a parameter store.
        label = value.get("name", value.get("key"))
        if isinstance(label, str) and value["value"] != REDACTED and rule.field(label):
            found.add(value["value"])
            value["value"] = REDACTED
            changed = True
    return changed


def mask_text(text: str, rule: Rule, found: Found, depth: int = 0) -> tuple[str, bool]:
    """Mask secrets in text of unknown shape: JSON (whole or cut), then name=value pairs."""
    stripped = text.lstrip()
    changed = False
    if stripped[:1] in ("{", "[") and depth <= _MAX_DEPTH:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            text, changed = mask_cut_json(text, rule, found, depth)
        else:
            masked, changed = mask_json(parsed, rule, found)
            if changed:
                text = json.dumps(masked, ensure_ascii=False)
            return text, changed
    else:
        text, changed = mask_cut_json(text, rule, found, depth)
    if "=" in text:
        text, assigned = mask_assignments(text, rule, found)
        changed = changed or assigned
    if ":" in text or "=" in text:
        text, labelled = mask_labels(text, rule, found)
        changed = changed or labelled
    if "<" in text:
        text, elements = mask_elements(text, rule, found)
        changed = changed or elements
    if "://" in text:
        text, userinfo = mask_userinfo(text, found)
        changed = changed or userinfo
    if "-----BEGIN" in text:
        text, pem = mask_private_keys(text, found)
        changed = changed or pem
    return text, changed


# A PEM private key is a secret whatever the field holding it is called.
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


def mask_private_keys(text: str, found: Found) -> tuple[str, bool]:
    """Mask the body of every PEM private key block (to the end of the text if cut)."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if match.group(2) == REDACTED:
            return match.group()
        found.add(match.group(2))
        changed = True
        return match.group(1) + REDACTED + match.group(3)

    masked = _PRIVATE_KEY.sub(replace, text)
    return (masked if changed else text), changed


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
        if not rule.field(match.group(1).strip("'")):
            return match.group()
        value = match.group(2)
        quote_mark = value[:1] if value[:1] in ("'", '"') else ""
        words = value.strip("'\"").split()
        found.add(value.strip("'\""))
        if len(words) > 1:
            found.add(words[-1])  # the credential after its scheme
        changed = True
        return match.group()[: match.start(2) - match.start()] + quote_mark + REDACTED + quote_mark

    masked = _LABEL.sub(replace, text)
    return (masked if changed else text), changed


# -- JSON-like text that could not be parsed (cut at the capture limit) ------------------

_JSON_STRING = r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)'
_JSON_TOKEN = re.compile(_JSON_STRING + r"|[{}\[\]:,]", re.DOTALL)
_STRING_AT = re.compile(_JSON_STRING, re.DOTALL)
_SCALAR_AT = re.compile(r"[^,}\]\s]*")
_SPACE_AT = re.compile(r"\s*")


def _json_string_value(token: str) -> str:
    """The text of a JSON string token, even an unterminated or badly escaped one."""
    try:
        value = json.loads(token if _is_closed(token) else token.rstrip("\\") + '"')
        return value if isinstance(value, str) else token
    except ValueError:
        return token.strip('"')


def _is_closed(token: str) -> bool:
    if len(token) < 2 or not token.endswith('"'):
        return False
    backslashes = len(token[1:-1]) - len(token[1:-1].rstrip("\\"))
    return backslashes % 2 == 0


def mask_cut_json(text: str, rule: Rule, found: Found, depth: int = 0) -> tuple[str, bool]:
    """Mask ``"name": value`` pairs in JSON-like text that does not parse.

    The value is masked to its real end: a string to its closing quote, an object or an
    array to its matching bracket (everything nested in it with it), a number or literal
    to the next delimiter. When the text ends first (it was cut), it is masked to the
    end of the text.
    """
    pieces: list[str] = []
    changed = False
    position = 0  # start of text not yet copied
    scan = 0
    # Only strings matter here (a key is a string followed by a colon); outside a string
    # a quote always opens one, so searching for the next string stays in step.
    while True:
        string = _STRING_AT.search(text, scan)
        if string is None:
            break
        scan = string.end()
        after = _SPACE_AT.match(text, scan).end()  # type: ignore[union-attr]
        if text[after : after + 1] == ":":
            if rule.field(_json_string_value(string.group())):
                start = _SPACE_AT.match(text, after + 1).end()  # type: ignore[union-attr]
                end = _value_end(text, start)
                found.add(_value_text(text[start:end]))
                pieces.append(text[position:start] + '"' + REDACTED + '"')
                position = scan = end
                changed = True
        elif (
            "\\" in string.group()
            and depth < _MAX_DEPTH
            and _is_closed(string.group())
            and rule.may_contain(string.group())
        ):
            # A string value holding escaped JSON or pairs: mask inside it.
            inner = _json_string_value(string.group())
            masked, inner_changed = mask_text(inner, rule, found, depth + 1)
            if inner_changed:
                pieces.append(text[position : string.start()])
                pieces.append(json.dumps(masked, ensure_ascii=False))
                position = scan
                changed = True
    pieces.append(text[position:])
    return ("".join(pieces) if changed else text), changed


def _value_end(text: str, start: int) -> int:
    """Where the JSON value starting at ``start`` ends (or the end of the text)."""
    first = text[start : start + 1]
    if first == '"':
        return _STRING_AT.match(text, start).end()  # type: ignore[union-attr]
    if first in ("{", "["):
        level = 0
        for token in _JSON_TOKEN.finditer(text, start):
            kind = token.group()
            if kind in ("{", "["):
                level += 1
            elif kind in ("}", "]"):
                level -= 1
                if level == 0:
                    return token.end()
        return len(text)
    return _SCALAR_AT.match(text, start).end()  # type: ignore[union-attr]


def _value_text(raw: str) -> Any:
    """What to scrub elsewhere for a raw masked value: its strings, or the scalar."""
    if raw[:1] == '"':
        return _json_string_value(raw)
    if raw[:1] in ("{", "["):
        return [_json_string_value(m.group()) for m in _STRING_AT.finditer(raw)]
    return raw


# -- compatibility helpers --------------------------------------------------------------


def mask_pairs(
    pairs: Iterable[tuple[str, str]], rule: Rule, found: Found | None = None
) -> tuple[list[tuple[str, str]], bool]:
    """Mask the values of sensitive keys in decoded (key, value) pairs; say whether any was."""
    found = Found() if found is None else found
    masked = []
    changed = False
    for key, value in pairs:
        if rule.field(key):
            found.add(value)
            masked.append((key, REDACTED))
            changed = True
        else:
            masked.append((key, value))
    return masked, changed
