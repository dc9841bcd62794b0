"""The cheap pre-check: False when no name the rule masks can be in a text, so that the
text needs no parsing (most bodies hold no credential at all).

It reads the text the way the rule reads a name. A name sits in a text between
characters that are not ASCII letters or digits (quotes, ``=``, ``&``, ``<``, spaces),
and the rule's words never span such a character, so the words of every name in the
text are among the words of the text's *runs* of letters, in the same order (digits
only split runs further; see ``_LETTERS``). A run is judged by the same table the rule
reads (:mod:`.vocabulary`, through :meth:`~.vocabulary.Mark.may_hold`): the run may hold
a name when one of its words is a mark whose condition can hold, judged with the word
before it, which for a run's first word is the last word of some other run. That is
the only thing looked up across runs, and it is looked up loosely (any run of the
text ending in the right word), so the answer is "maybe" whenever the rule could mask.
``tests/test_masking_fuzz.py`` checks it on names in any spelling and any surroundings.

A name the text spells with escapes (``pass\\u0077ord``, ``pass%77ord``) is only seen
once parsed, so any such escape means "maybe"; JSON's ``\\n``-style escapes are read
both ways. A secret no name announces (:data:`.nameless.NAMELESS`) means "maybe" too.
The verdict on each distinct run is remembered, within a bound in bytes: bodies of one
API repeat the same keys event after event.
"""

from __future__ import annotations

import re
from collections.abc import Set

from .nameless import NAMELESS
from .vocabulary import MARKS, mark_of, split_words

__all__ = ["PreCheck"]

# Keep ASCII letters (and digits), and turn every other byte into a space. No word of the
# table has a digit, so digits only separate runs (which loosens nothing: a word before
# is then looked up across runs); this keeps ids and numbers, which differ from event
# to event, out of the cache. A user's name may end in a digit: then digits are kept.
_LETTERS = bytes(c if chr(c).isascii() and chr(c).isalpha() else 32 for c in range(256))
_ALNUM = bytes(c if chr(c).isascii() and chr(c).isalnum() else 32 for c in range(256))
# \n, \t... in JSON text: the letter after the backslash is not part of a name.
_LETTER_ESCAPE = re.compile(rb"\\[bfnrt]")
# Every word some mark must come after (api, credit, session...): a run ending in one
# may complete a name that another run begins.
# One that is a mark on its own (session, for "session id") needs no looking up: a text
# holding it is "maybe" already.
_SELF_EVIDENT = frozenset(word for word, mark in MARKS.items() if mark.after is None)
_BEFORE_WORDS = frozenset(
    word for mark in MARKS.values() for word in mark.after or () if word not in _SELF_EVIDENT
)
_NEEDS_NOTHING: frozenset[str] = frozenset()
_UNJUDGED = frozenset({""})  # a sentinel: no word is ""
_CACHE_BYTES = 256 * 1024
# A longer run (a long hex string) is judged each time rather than pushing out the rest.
_CACHED_RUN = _CACHE_BYTES // 16
_CACHE_ENTRIES = 4096


class PreCheck:
    """``may_contain`` for one rule: the built-in table plus the user's own names."""

    def __init__(self, user_words: Set[str]) -> None:
        # A user's name is masked when a name ends with its words: look for its last word.
        self._user_words = frozenset(user_words)
        self._runs = _ALNUM if any(word.isdigit() for word in user_words) else _LETTERS
        self._plain: set[bytes] = set()  # runs that cannot hold a name, whatever is near
        # Runs that can: None when alone, else the words one must follow for it to.
        self._verdicts: dict[bytes, frozenset[str] | None] = {}
        self._lasts: dict[bytes, str] = {}  # runs ending in a word of _BEFORE_WORDS
        self._cached_bytes = 0

    def may_contain(self, text: str) -> bool:
        backslash = "\\" in text
        if (backslash and "\\u" in text) or "%" in text:
            return True  # a name may be spelled with escapes
        for needle, may_hold, _ in NAMELESS:
            if needle in text and may_hold(text):
                return True
        raw = text.encode() if text.isascii() else text.encode("utf-8", "surrogatepass")
        runs = set(raw.translate(self._runs).split())
        if backslash:  # the runs as JSON text reads them, and as they are
            runs.update(_LETTER_ESCAPE.sub(b"  ", raw).translate(self._runs).split())
        if self._cached_bytes > _CACHE_BYTES or len(self._verdicts) >= _CACHE_ENTRIES:
            self._forget()  # before reading the cache: a run's last word must stay known
        unknown = runs - self._plain
        if not unknown:
            return False
        needs: set[str] = set()
        for run in unknown:
            verdict = self._verdicts.get(run, _UNJUDGED)
            if verdict is _UNJUDGED:
                verdict = self._judge(run)
            if verdict is None:
                return True
            needs.update(verdict)
        if not needs:
            return False
        lasts = self._lasts
        return any(lasts[run] in needs for run in runs & lasts.keys())

    def _judge(self, run: bytes) -> frozenset[str] | None:
        """What ``run`` needs before it to hold a name (None: nothing), remembered."""
        words = split_words(run.decode("ascii"))
        needs: set[str] = set()
        verdict: frozenset[str] | None = _NEEDS_NOTHING
        for i, word in enumerate(words):
            if word in self._user_words:
                verdict = None
                break
            mark = mark_of(word)
            if mark is None:
                continue
            if i == 0 and mark.after is not None:
                needs.update(mark.after & _BEFORE_WORDS)  # the word before: another run's last
            elif i == 0 or mark.may_hold(words[i - 1]):
                verdict = None
                break
        if verdict is not None and needs:
            verdict = frozenset(needs)
        if words and words[-1] in _BEFORE_WORDS:
            if len(run) > _CACHED_RUN:
                return None  # its last word cannot be remembered: say maybe
            self._lasts[run] = words[-1]
        if len(run) > _CACHED_RUN:
            return verdict
        self._cached_bytes += len(run)
        if verdict is _NEEDS_NOTHING:
            self._plain.add(run)
        else:
            self._verdicts[run] = verdict
        return verdict

    def _forget(self) -> None:
        self._plain.clear()
        self._verdicts.clear()
        self._lasts.clear()
        self._cached_bytes = 0
