"""Redaction patterns and registered secrets (the runner-level guarantees are in test_guard_secrets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.guard import MASK, PATTERN_NAMES, PolicyInvalid, Redactor
from services.guard.redact import _RULES

CASES = [
    ("bearer", "token is Bearer eyJhbGciOi-abc.def_ghi", "Bearer abc.def_ghi", "token is Bearer ***"),
    ("flag", "kubectl --token=s3cr3tTOKEN get pods", "s3cr3tTOKEN", "kubectl --token=*** get pods"),
    ("flag", "kubectl --token s3cr3tTOKEN get", "s3cr3tTOKEN", "kubectl --token *** get"),
    ("flag", "mysql --password=hunter22 db", "hunter22", "mysql --password=*** db"),
    ("flag", "x --client-secret 'a b c'", "'a b c'", "x --client-secret ***"),
    ("header", "curl -H 'Authorization: Bearer abc123' u", "abc123", "curl -H 'Authorization: Bearer ***' u"),
    ("header", "authorization: Basic dXNlcjpwdw==\nnext", "dXNlcjpwdw==", "authorization: Basic ***\nnext"),
    ("header", "X-Api-Key: k-12345", "k-12345", "X-Api-Key: ***"),
    ("url", "psql postgresql://app:pw0rd@db:5432/x", "pw0rd", "psql postgresql://app:***@db:5432/x"),
    ("url", "redis://:pw0rd@cache", "pw0rd", "redis://:***@cache"),
    ("aws-key", "key AKIAIOSFODNN7EXAMPLE ok", "AKIAIOSFODNN7EXAMPLE", "key *** ok"),
    (
        "aws-secret",
        "s wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY e",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "s *** e",
    ),
    ("keyvalue", "AWS_SECRET_ACCESS_KEY=abcdEF12", "abcdEF12", "AWS_SECRET_ACCESS_KEY=***"),
    ("keyvalue", "host=db password=hunter22 user=x", "hunter22", "host=db password=*** user=x"),
    ("keyvalue", "  client_secret: zzzzzz\n", "zzzzzz", "  client_secret: ***\n"),
    ("json", '{"SecretAccessKey": "abc\\"def", "id": 1}', 'abc\\"def', '{"SecretAccessKey": "***", "id": 1}'),
    ("json", '{"Authorization":"Bearer x1y2"}', "x1y2", '{"Authorization":"***"}'),
    ("jwt", "t eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "SflKxwRJSMeKKF2QT4", "t ***"),
    ("github", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abc", MASK),
    (
        "pem",
        "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nb",
        "MIIEow",
        "a\n-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\nb",
    ),
    ("pem", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", "MIIEvQ", "-----BEGIN PRIVATE KEY-----***"),
]


@pytest.mark.parametrize(("name", "text", "secret", "expected"), CASES)
def test_patterns_mask_the_secret_and_keep_the_context(
    name: str, text: str, secret: str, expected: str
) -> None:
    seen: set[str] = set()
    redacted = Redactor().redact(text, seen)
    assert secret not in redacted
    assert redacted == expected
    assert name in seen


def test_every_pattern_name_is_covered_by_a_case() -> None:
    assert {name for name, *_ in CASES} | {"registered"} == set(PATTERN_NAMES)


@pytest.mark.parametrize(
    "text",
    [
        "psql --no-password -c 'select 1'",
        "docker login --password-stdin",
        "git 3f786850e387550fdab836ed7e6dc881de23001b",
        "namespace/team-alpha created",
        '{"token_type": "bearer", "expires_in": 3600}',
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


def test_registered_secrets_and_their_encoded_forms() -> None:
    redactor = Redactor(["p@ss word/1"])
    text = 'a p@ss word/1 b p%40ss%20word%2F1 c "p@ss word/1"'
    assert redactor.redact(text) == 'a *** b *** c "***"'
    redactor.register('quo"te')
    assert redactor.redact('{"v": "quo\\"te"}') == '{"v": "***"}'


def test_longer_secrets_win_over_their_prefixes() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact("abcdefgh") == MASK


def test_too_short_secrets_are_refused() -> None:
    with pytest.raises(PolicyInvalid, match="at least 4"):
        Redactor(["abc"])


def test_redaction_is_idempotent_and_repr_shows_no_secret() -> None:
    redactor = Redactor(["s3cr3t-value"])
    once = redactor.redact("x s3cr3t-value --token=abc Authorization: Bearer z")
    assert redactor.redact(once) == once
    assert "s3cr3t" not in repr(redactor)


_secret_text = st.text(st.characters(exclude_characters="*"), min_size=4, max_size=24)


@settings(max_examples=200, deadline=None)
@given(secret=_secret_text, before=st.text(max_size=30), after=st.text(max_size=30))
def test_a_registered_secret_never_survives(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    assert secret not in redactor.redact(before + secret + after + secret)


_fragments = st.sampled_from(
    [
        "Authorization: Bearer abc",
        "--token=",
        "password",
        "PASSWORD=",
        "pa\u017f\u017fword=",
        "credent\u0130al=",
        "\u212aey: ",
        "://u:p@h",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJabcdef.eyJabcdef.sig",
        "-----BEGIN X-----",
        '"secret": "v"',
        " ",
        "\n",
        "=",
        ":",
        "x",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_fragments, st.text(max_size=8)), max_size=12).map("".join))
def test_the_prefilter_never_changes_the_result(text: str) -> None:
    unfiltered = text
    for rule in _RULES:
        unfiltered = rule.pattern.sub(rule.replace, unfiltered)
    assert Redactor().redact(text) == unfiltered
