"""Secret redaction for everything the runner records: output, echoed commands, errors.

A :class:`Redactor` masks (with ``***``) what its patterns recognise and every secret value
registered with it, the name or scheme kept where it helps a reader (``--token=***``,
``Authorization: Bearer ***``, ``postgresql://app:***@db``):

========== ==========================================================================
name       what is masked
========== ==========================================================================
pem        PEM blocks (``-----BEGIN ...-----`` to its END, or to the end of the text)
header     values of Authorization, Proxy-Authorization, Cookie, X-Api-Key,
           X-Auth-Token and X-Amz-Security-Token headers (scheme kept)
bearer     ``Bearer <token>`` anywhere
flag       ``--token=`` ``--password`` ``--secret`` ``--api-key`` ``--access-key``
           ``--private-key`` ``--credential(s)`` values (``=`` or a following word)
json       JSON string values whose key ends in password, secret, token, api key,
           access key, private key, authorization or credential(s)
keyvalue   ``key=value`` / ``key: value`` pairs with such keys (env, libpq, YAML)
url        the password of ``scheme://user:password@host``
aws-key    AWS access key ids (AKIA..., ASIA...)
aws-secret 40-character AWS secret keys (mixed case and digits)
jwt        JSON web tokens (``eyJ...``), e.g. Kubernetes service-account tokens
github     GitHub tokens (``ghp_...`` and kin)
registered every registered secret, also URL-encoded and JSON-escaped
========== ==========================================================================

Redact first, then truncate: the runner keeps a margin of output beyond the stored bound,
redacts it whole, and only then cuts, so a secret across the bound is masked entirely.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import NamedTuple

from services.guard.errors import PolicyInvalid

MASK = "***"
MIN_SECRET_LENGTH = 4

_KEYWORDS = (
    r"(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key"
    r"|private[_-]?key|credentials?)"
)

_KEY_HINTS = ("password", "passwd", "pwd", "secret", "token", "key", "credential")


class _Rule(NamedTuple):
    """A pattern, the replacement of each match, and a prefilter: the pattern only runs on text
    (lowercased) where one of its hint words appears; a rule without hints always runs."""

    name: str
    hints: re.Pattern[str] | None
    pattern: re.Pattern[str]
    replace: Callable[[re.Match[str]], str]


_CASE_TWINS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})
"""The non-ASCII letters that ``re.IGNORECASE`` matches to an ASCII letter and ``lower()`` does not
turn into it (the Kelvin sign does lower to k)."""


def _hints(*words: str) -> re.Pattern[str] | None:
    return re.compile("|".join(map(re.escape, words))) if words else None


def _pem(found: re.Match[str]) -> str:
    end = f"-----END {found[1]}-----" if found[2] is not None else ""
    return f"-----BEGIN {found[1]}-----{MASK}{end}"


_RULES: tuple[_Rule, ...] = (
    _Rule(
        "pem",
        _hints("-----begin "),
        re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----(?:[\s\S]*?(-----END \1-----)|[\s\S]*\Z)"),
        _pem,
    ),
    _Rule(
        "header",
        _hints("authorization", "cookie", "x-api-key", "x-auth-token", "x-amz-security-token"),
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|x-api-key|x-auth-token|x-amz-security-token|set-cookie|cookie)"
            r"(\s*:\s*)(?:(bearer|basic|token|digest|negotiate|aws4-hmac-sha256)\s+)?[^\r\n'\"]+"
        ),
        lambda m: f"{m[1]}{m[2]}{m[3] + ' ' if m[3] else ''}{MASK}",
    ),
    _Rule(
        "bearer",
        _hints("bearer"),
        re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"),
        lambda m: f"{m[1]} {MASK}",
    ),
    _Rule(
        "flag",
        _hints(*_KEY_HINTS),
        re.compile(
            r"(?i)(?<![\w-])(--(?!no-)[\w-]*(?:token|password|passwd|secret|api-?key|access-key|secret-key"
            r"|private-key|credentials?))(=|[ \t]+(?!-))('[^']*'|\"[^\"]*\"|[^\s'\"]+)"
        ),
        lambda m: f"{m[1]}{m[2]}{MASK}",
    ),
    _Rule(
        "json",
        _hints(*_KEY_HINTS, "authorization"),
        re.compile(r'(?i)("[\w-]*(?:' + _KEYWORDS + r'|authorization)"\s*:\s*")(?:[^"\\]|\\.)*(")'),
        lambda m: f"{m[1]}{MASK}{m[2]}",
    ),
    _Rule(
        "keyvalue",
        _hints(*_KEY_HINTS),
        re.compile(
            r"(?i)(?<![\w.-])([\w.-]*" + _KEYWORDS + r")(\s*=\s*|:[ \t]+)(?!\*\*\*)"
            r"('[^']*'|\"[^\"]*\"|[^\s'\"&;,]+)"
        ),
        lambda m: f"{m[1]}{m[2]}{MASK}",
    ),
    _Rule(
        "url",
        _hints("://"),
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@'\"]*):([^\s@/'\"]+)@"),
        lambda m: f"{m[1]}:{MASK}@",
    ),
    _Rule(
        "aws-key",
        _hints(
            "akia", "asia", "abia", "acca", "agpa", "aida", "aipa", "anpa", "anva", "apka", "aroa", "asca"
        ),
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b"),
        lambda m: MASK,
    ),
    _Rule(
        "aws-secret",
        _hints(),
        re.compile(
            r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
        ),
        lambda m: MASK,
    ),
    _Rule(
        "jwt",
        _hints("eyj"),
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        lambda m: MASK,
    ),
    _Rule(
        "github",
        _hints("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
        lambda m: MASK,
    ),
)

PATTERN_NAMES: tuple[str, ...] = (*(rule.name for rule in _RULES), "registered")
"""The names :meth:`Redactor.redact` reports in ``seen``."""


class Redactor:
    """Masks secrets: the built-in patterns plus every value given to :meth:`register`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._registered: re.Pattern[str] | None = None
        for secret in secrets:
            self.register(secret)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} registered values)"

    def register(self, secret: str) -> None:
        """Mask ``secret`` (and its URL-encoded and JSON-escaped forms) from now on."""
        if len(secret) < MIN_SECRET_LENGTH:
            raise PolicyInvalid(
                f"a registered secret must have at least {MIN_SECRET_LENGTH} characters (this one has "
                f"{len(secret)}): shorter values are not credentials and would mask ordinary text."
            )
        variants = {
            secret,
            urllib.parse.quote(secret, safe="", errors="surrogatepass"),
            json.dumps(secret)[1:-1],
        }
        if not variants <= self._secrets:
            self._secrets |= variants
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._registered = re.compile("|".join(map(re.escape, ordered)))

    def redact(self, text: str, seen: set[str] | None = None) -> str:
        """``text`` with every secret masked; the names of the rules that fired go into ``seen``."""
        if self._registered is not None:
            text, count = self._registered.subn(MASK, text)
            if count and seen is not None:
                seen.add("registered")
        # Masks never create a hint word, so the lowered text stays a safe prefilter throughout.
        lowered = text.translate(_CASE_TWINS).lower()
        for rule in _RULES:
            if rule.hints is not None and not rule.hints.search(lowered):
                continue
            text, count = rule.pattern.subn(rule.replace, text)
            if count and seen is not None:
                seen.add(rule.name)
        return text

    def __call__(self, text: str) -> str:
        return self.redact(text)
