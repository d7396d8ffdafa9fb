"""Secrets never enter UPM: detection at every ingress, and the syntax of a secret reference.

Everything a person sends (intent request, spec values and keys at any depth, reason, window,
variant, idempotency key; the reason and group of approve/deny/resume/rollback/cancel; every
file the CLI reads as a spec) is scanned before anything is appended. A hit is refused with the
field and the kind of secret, never the value (:func:`refuse_secrets`).

Detectors, cheapest first:

- ours (``_RULES``), for what detect-secrets lacks or finds only in source-code form:
  Authorization headers, ``Bearer``/``Basic`` credentials, ``password=`` / ``secret=`` /
  ``token=`` / ``api_key=`` … pairs (``=``, ``:``, JSON), bare AWS secret access keys, crypt(3)
  password hashes (``/etc/shadow``);
- detect-secrets (Yelp) :func:`detect_secrets.core.scan.scan_line` with its regex plugins
  (``_VENDOR_PLUGINS``): AWS access key ids, PEM private keys, URLs with a password, JWTs and the
  vendor token formats (GitHub, GitLab, Slack, Stripe, Twilio, SendGrid, npm, PyPI, OpenAI,
  Discord, Telegram, Mailchimp, Artifactory, Azure storage, IBM, Square, SoftLayer, Cloudant).
  Its entropy and keyword plugins flag ordinary words when given one line (no file context), so
  they are off; lines without a run of 16 token characters, ``://``, ``BEGIN`` or ``PuTTY`` (what
  every vendor format needs) skip it;
- a high-entropy string value under a secret-named key (``db_password: 9fK2…``).

A secret reference is never a secret: ``secret:NAME`` as a whole value, or ``${secret:NAME}``
inside text (file content). NAME is 1-64 of ``A-Z a-z 0-9 _``, starting with a letter or ``_``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any, NamedTuple

from events.errors import InvalidEvent

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
WHOLE_REFERENCE = re.compile(rf"secret:({_NAME})")
"""A value that is a reference as a whole: ``secret:NAME`` (use with ``fullmatch``)."""
EMBEDDED_REFERENCE = re.compile(rf"\$\{{secret:({_NAME})\}}")
"""A reference inside text: ``${secret:NAME}``."""

RESOLVED_AT_RUN_TIME = "<from the resolved secret references>"
"""A desired-state value a plan cannot know (a file's size and sha256 when its content references
a secret): the verifier computes it from the resolved content (``services.security.secrets.resolved_desired``)."""

HOW_TO_REFERENCE = (
    "Secrets are never stored by UPM: put the value in the executor's secret store (the environment "
    "variable UPM_SECRET_<NAME>, or a file <NAME> in its secrets directory) and reference it: "
    "'secret:NAME' as a whole value, or '${secret:NAME}' inside file content."
)


class Finding(NamedTuple):
    """Where a secret was found (a field path) and what kind it looks like; never the value."""

    field: str
    kind: str


def references(text: str) -> tuple[str, ...]:
    """The secret names ``text`` references (whole value or embedded), in order, without repeats."""
    whole = WHOLE_REFERENCE.fullmatch(text)
    names = [whole[1]] if whole else [m[1] for m in EMBEDDED_REFERENCE.finditer(text)]
    return tuple(dict.fromkeys(names))


def substitute(text: str, value_of: Callable[[str], str]) -> str:
    """``text`` with each reference replaced by ``value_of(name)``."""
    whole = WHOLE_REFERENCE.fullmatch(text)
    if whole:
        return value_of(whole[1])
    return EMBEDDED_REFERENCE.sub(lambda m: value_of(m[1]), text)


def _is_reference(value: str) -> bool:
    value = value.strip("'\"")
    return bool(WHOLE_REFERENCE.fullmatch(value) or EMBEDDED_REFERENCE.fullmatch(value))


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _random_looking(value: str) -> bool:
    """Mixes letters with digits, or is long and high-entropy: a credential, not a word."""
    has_alpha, has_digit = any(c.isalpha() for c in value), any(c.isdigit() for c in value)
    return (has_alpha and has_digit and len(value) >= 6) or (len(value) >= 12 and _entropy(value) >= 3.5)


_PLACEHOLDER = re.compile(r"\*+|<[^<>]*>|\{\{.*\}\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|x+|X+|\.\.\.|…")
_KEYWORDS = (
    r"(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key"
    r"|private[_-]?key|client[_-]?secret|credentials?)"
)
SECRET_KEY = re.compile(rf"(?i)[\w.-]*{_KEYWORDS}")
"""A field name that announces a secret (``password``, ``db_token``, ``aws_secret_access_key``)."""


def _pair(found: re.Match[str]) -> bool:
    value = found["value"].strip("'\"")
    if not value or _is_reference(value) or _PLACEHOLDER.fullmatch(value):
        return False
    return len(value) >= 4 if found["sep"].strip() == "=" else _random_looking(value)


def _bearer(found: re.Match[str]) -> bool:
    return _random_looking(found[1])


def _basic(found: re.Match[str]) -> bool:
    try:
        decoded = base64.b64decode(found[1] + "=" * (-len(found[1]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded and decoded.isascii()


def _always(found: re.Match[str]) -> bool:
    return True


class _Rule(NamedTuple):
    kind: str
    hint: re.Pattern[str] | None  # the rule runs only on (lowercased) text this finds
    pattern: re.Pattern[str]
    confirm: Callable[[re.Match[str]], bool]


def _hint(*words: str) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, words)))


_RULES: tuple[_Rule, ...] = (
    _Rule(
        "an Authorization header",
        _hint("authorization"),
        re.compile(
            r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest|negotiate)\s+)?"
            r"[A-Za-z0-9._~+/=:-]{8,}"
        ),
        _always,
    ),
    _Rule("a bearer token", _hint("bearer"), re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{8,}=*)"), _bearer),
    _Rule("basic-auth credentials", _hint("basic"), re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,}={0,2})"), _basic),
    _Rule(
        "an AWS secret access key",
        None,
        re.compile(
            r"(?<![A-Za-z0-9/+=._-])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=._-])"
        ),
        _always,
    ),
    _Rule(
        "a password/secret/token/api-key pair",
        _hint("pass", "pwd", "secret", "token", "key", "credential"),
        re.compile(
            rf"(?i)(?<![\w.-])[\"']?[\w.-]*{_KEYWORDS}[\"']?(?P<sep>\s*=\s*|\s*:[ \t]*)"
            r"(?P<value>'[^'\n]*'|\"[^\"\n]*\"|[^\s'\",;&]+)"
        ),
        _pair,
    ),
    _Rule(
        "a password hash",
        _hint("$"),
        re.compile(r"\$(?:1|2[abxy]?|5|6|7|y|gy|md5|sha1|argon2(?:id|i|d))\$[^\s:$]*\$?[./A-Za-z0-9+=$,]{8,}"),
        _always,
    ),
)

_VENDOR_PLUGINS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "CloudantDetector",
    "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "IbmCloudIamDetector",
    "IbmCosHmacDetector", "JwtTokenDetector", "MailchimpDetector", "NpmDetector", "OpenAIDetector",
    "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SoftlayerDetector",
    "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
)
_VENDOR_HINT = re.compile(r"://|BEGIN|PuTTY|[A-Za-z0-9_+/=.-]{16,}")
_VENDOR_KINDS = {
    "Basic Auth Credentials": "a URL with a password",
    "Private Key": "a private key",
    "AWS Access Key": "an AWS access key",
    "JSON Web Token": "a JSON web token",
}


@cache
def _vendor_scanner() -> Callable[[str], Iterator[Any]]:
    """detect-secrets' ``scan_line`` with only its regex plugins (configured once per process)."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import get_settings

    settings = get_settings()
    settings.configure_plugins([{"name": name} for name in _VENDOR_PLUGINS])
    # "pragma: allowlist secret" in a line must not let a secret in.
    settings.disable_filters("detect_secrets.filters.allowlist.is_line_allowlisted")
    return scan_line


_ANY_REFERENCE = re.compile(rf"(?<![\w:$-])secret:{_NAME}\b|\$\{{secret:{_NAME}\}}")


def find_secret(text: str) -> str | None:
    """The kind of the first secret in ``text`` (``"a bearer token"``), or ``None``. References
    (:data:`WHOLE_REFERENCE`, :data:`EMBEDDED_REFERENCE`) are not secrets."""
    text = _ANY_REFERENCE.sub("<ref>", text)
    lowered = text.lower()
    for rule in _RULES:
        if rule.hint is not None and not rule.hint.search(lowered):
            continue
        if any(rule.confirm(m) for m in rule.pattern.finditer(text)):
            return rule.kind
    for line in text.splitlines():
        if _VENDOR_HINT.search(line):
            for found in _vendor_scanner()(line):
                return _VENDOR_KINDS.get(found.type, f"a {found.type}")
    return None


def scan(value: Any, field: str) -> Finding | None:
    """The first secret in ``value`` (text, or mappings and lists of them at any depth), with the
    path of the field that holds it (``spec.resources[0].content``)."""
    if isinstance(value, str):
        kind = find_secret(value)
        return Finding(field, kind) if kind else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{field}.{key}"
            named = scan(str(key), f"{path} (the key)")
            if named:
                return named
            if (
                isinstance(item, str) and SECRET_KEY.fullmatch(str(key)) and not _is_reference(item)
                and not _PLACEHOLDER.fullmatch(item) and (_random_looking(item) or _entropy(item) >= 3.0)
            ):
                return Finding(path, "a high-entropy value in a secret-named field")
            found = scan(item, path)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = scan(item, f"{field}[{i}]")
            if found:
                return found
    return None


def refusal(found: Finding) -> str:
    """The message for a secret found: the field and the kind, never the value, and what to do."""
    return f"'{found.field}' holds what looks like {found.kind}; it was refused and nothing was stored. " + HOW_TO_REFERENCE


def refuse_secrets(fields: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidEvent` (rule ``secret``) for the first field holding a secret."""
    for name, value in fields.items():
        found = scan(value, name) if value is not None else None
        if found:
            raise InvalidEvent(refusal(found), field=found.field, rule="secret")
