"""The name rule: whether a field or header name is a credential, for one configuration.

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
The words and their conditions are one table, :mod:`.vocabulary`, which the pre-check
(:mod:`.precheck`) reads too; ``tests/test_redaction.py`` holds the table of names that
must and must not be masked.

Users add names (``OTAS_SENSITIVE_FIELDS``: masked when a name ends with their words) and
exempt names (``OTAS_SAFE_FIELDS``: never masked by the rule when a name has exactly their
words). Header names follow the same rule, plus the built-in list that is always redacted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable

from .names import BUILTIN_SENSITIVE_HEADERS
from .precheck import PreCheck
from .vocabulary import DESCRIPTORS, NEGATING_PREFIXES, mark_of, split_words

__all__ = ["Rule", "is_credential", "split_words"]

_NAME_CACHE_LIMIT = 4096
_CACHED_NAME_LENGTH = 100


def is_credential(words: tuple[str, ...]) -> bool:
    """The built-in rule: whether a name made of ``words`` names a credential."""
    mark = -1
    last = len(words) - 1
    for i, word in enumerate(words):
        found = mark_of(word)
        if found is not None and found.holds(words[i - 1] if i else "", i == last):
            mark = i
    if mark < 0:
        return False
    for i in range(mark + 1, len(words)):
        # id_token_hint carries the ID token itself (OpenID Connect).
        if words[i] in DESCRIPTORS and not (words[i] == "hint" and words[mark] == "token"):
            return False
    return not (mark > 0 and words[0] in NEGATING_PREFIXES)


def _words_of_setting(names: Iterable[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(w for w in (split_words(n) for n in names) if w)


def _remember(cache: dict[str, bool], name: str, verdict: bool) -> None:
    """Keep a verdict on a short name; the cache starts over when full (names of one API
    are a few hundred)."""
    if len(name) <= _CACHED_NAME_LENGTH:
        if len(cache) >= _NAME_CACHE_LIMIT:
            cache.clear()
        cache[name] = verdict


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
        self._headers = _words_of_setting(BUILTIN_SENSITIVE_HEADERS) | _words_of_setting(
            extra_headers
        )
        self._fields: dict[str, bool] = {}
        self._header_cache: dict[str, bool] = {}
        # may_contain(text): False when no sensitive name can be in ``text``, which then
        # needs no parsing. The pre-check's own method, called on every body and error.
        self.may_contain: Callable[[str], bool] = PreCheck(
            {words[-1] for words in self._extra}
        ).may_contain

    @property
    def known_fields(self) -> dict[str, bool]:
        """The cache of :meth:`field`: name -> whether it is sensitive."""
        return self._fields

    def field(self, name: str) -> bool:
        """Whether the value of a field (JSON key, form or query key) called ``name`` is masked."""
        cached = self._fields.get(name)
        if cached is None:
            cached = self._field(split_words(name))
            _remember(self._fields, name, cached)
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
            _remember(self._header_cache, name, cached)
        return cached
