"""The one table of words that make a name a credential, with the condition of each.

Both the name rule (:mod:`.rule`) and the cheap pre-check that decides whether a text
needs parsing at all (:mod:`.precheck`) read this table and nothing else, so the
pre-check cannot miss a name the rule masks: a word becomes a credential mark only
through :func:`mark_of` and :meth:`Mark.holds`, and the pre-check asks the same
question, leaving out only the parts of a condition it cannot see from inside a text
(whether the word is the name's last, and a word before it that rules it out).

A name is read like an English compound, whose last noun says what it is (see
:func:`otas_capture.event.masking.rule.is_credential`): the last word that is a mark
here makes the name sensitive, unless a :data:`DESCRIPTORS` word after it says the
value is *about* the credential (``token_type``), or the first word is one of
:data:`NEGATING_PREFIXES` (``is_secret``, ``max_token``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["DESCRIPTORS", "MARKS", "NEGATING_PREFIXES", "Mark", "mark_of", "split_words"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


class Mark(NamedTuple):
    """When a word names a credential, judged with the word before it.

    ``after``: the word before must be one of these (``api key``, not ``sort key``);
    None when any word, or none, may come before. ``not_after``: the word before must
    not be one of these (``boarding pass``). ``last``: only as the name's last word
    (``session`` holds the credential, ``session_start`` does not).
    """

    after: frozenset[str] | None = None
    not_after: frozenset[str] = frozenset()
    last: bool = False

    def holds(self, before: str, last: bool) -> bool:
        """The rule's question: is the word a mark, after ``before`` ("" at the start)?"""
        if self.after is not None and before not in self.after:
            return False
        return before not in self.not_after and (last or not self.last)

    def may_hold(self, before: str) -> bool:
        """The pre-check's question: could the word be a mark after ``before`` in some name?

        Inside a text it cannot tell whether the word is a name's last, nor whether the
        word before belongs to the same name, so it leaves those conditions out: it
        says yes whenever :meth:`holds` could.
        """
        return self.after is None or before in self.after


ALWAYS = Mark()
# "<qualifier> key" is a credential: api key, private key; not public, primary or sort key.
_KEY_QUALIFIERS = _words(
    "api private secret access signing encryption master session client auth license "
    "licence app consumer shared hmac ssh"
)
# "<qualifier> code" is a one-time or security code: mfa code, 2fa code, auth code.
_CODE_QUALIFIERS = _words(
    "security mfa fa tfa otp totp verification recovery backup auth authorization sms pin "
    "access reset confirmation"
)
# card number, cc no, social security number.
_NUMBERED = Mark(after=_words("card cc security"))
# "<word> pass" that is a ticket or a result, not a password.
_NOT_PASSWORDS = _words("boarding bus day season hall free ticket event test first")

MARKS: dict[str, Mark] = {
    **dict.fromkeys(
        # Words that name a credential on their own.
        _words(
            "password passwd pwd passphrase passcode secret secrets token credential "
            "credentials creds authorization authorisation cookie cookies csrf xsrf jwt "
            "cvv cvc otp totp hotp ssn pin pincode"
        )
        # Single words that glue a compound together (as HTTP and frameworks spell them).
        | _words(
            "apikey privatekey secretkey accesskey authkey sessionid jsessionid phpsessid "
            "sessid sessionkey cardnumber ccnumber ccnum creditcard"
        ),
        ALWAYS,
    ),
    "key": Mark(after=_KEY_QUALIFIERS),
    "code": Mark(after=_CODE_QUALIFIERS),
    **dict.fromkeys(("number", "num", "no", "nr"), _NUMBERED),
    "id": Mark(after=frozenset({"session"})),
    "card": Mark(after=frozenset({"credit", "debit"}), last=True),
    # {"user": ..., "pass": ...}, db_pass; not boarding_pass or a test's pass count.
    **dict.fromkeys(("pass", "pw"), Mark(not_after=_NOT_PASSWORDS, last=True)),
    # "session" and "auth" alone hold the credential; session_start, auth_type do not.
    **dict.fromkeys(("session", "auth"), Mark(last=True)),
}
# A glued word longer than six letters ending in one of these (newpassword, clientsecret,
# csrfmiddlewaretoken) is a mark as well.
GLUED_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "pwd")
_GLUED_MIN_LENGTH = 7


def mark_of(word: str) -> Mark | None:
    """The condition under which ``word`` (lower case) names a credential, or None."""
    mark = MARKS.get(word)
    if mark is None and len(word) >= _GLUED_MIN_LENGTH and word.endswith(GLUED_SUFFIXES):
        return ALWAYS
    return mark


# Words that, after the credential, make the name about the credential, not the value.
DESCRIPTORS = _words(
    "type types kind count counts length len size limit limits max min minimum maximum "
    "name names hint hints policy policies strength expires expiry expiration exp expired "
    "ttl lifetime age duration timeout interval at on time date timestamp created updated "
    "changed modified required requirement requirements enabled disabled set present "
    "exists valid invalid validity status state url uri endpoint path field fields label "
    "placeholder format pattern regex rule rules version mode method methods scheme "
    "provider providers usage used remaining index idx prefix suffix last masked redacted "
    "id ids error errors message issued issuer audience scope scopes revoked verified "
    "confirmed sent consent banner domain secure httponly samesite arn location supported "
    "optional provided visible hidden strategy algorithm alg encoding digits attempts "
    "retries rotation rotated"
)
# A first word that makes the whole name a flag or a count: is_secret, max_token.
NEGATING_PREFIXES = _words(
    "is has have no num n max min total count show hide require requires use uses enable "
    "disable allow allows need needs can should must"
)

# Words as the rule reads them: runs of capitals (an acronym), a word in lower case with
# an optional capital first, or digits. Only ASCII matches: other characters separate.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def split_words(name: str) -> tuple[str, ...]:
    """The lower-case words of a name in any spelling: snake, camel, kebab, dotted, ``a[b]``."""
    return tuple(word.lower() for word in _WORD.findall(name))
