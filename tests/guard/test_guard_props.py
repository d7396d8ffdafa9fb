"""Properties over random command strings (hypothesis).

* the parser never crashes: it returns a Pipeline or raises the guard's own CommandRefused;
* nothing with a live (unquoted, or shell-active in double quotes) metacharacter is accepted,
  judged by an independent oracle;
* a metacharacter put anywhere unquoted is refused with its token and position, and ``run``
  then never reaches exec (no process is started, not even a version report);
* an accepted command's display parses back to the same stages.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from unittest import mock

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.guard import SPEC_METACHARACTERS, CommandRefused, MetacharacterRefused, RunSpec, check, run
from services.guard.parse import _split, _split_plain, _split_quoted

SETTINGS = settings(max_examples=300, deadline=None)

_ALPHABET = st.sampled_from(
    [*"abcxyz019 -_./=:,|'\"\\;&<>`$(){}[]*?~#!\t\n\r\x00\x7f", "é", "\u00a0", "&&", "||", ">>", "$("]
)
commands = st.lists(_ALPHABET, max_size=40).map("".join)


def live_metacharacter(command: str) -> bool:
    """The oracle: is there a metacharacter a POSIX shell would act on, or a newline/control?"""
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", command):
        return True
    quoted = re.compile(r"'[^']*'|\"[^\"]*\"")
    for segment in quoted.findall(command):
        if segment.startswith('"') and re.search(r"\$\(|`|\\", segment):
            return True
    outside = quoted.sub("Q", command)
    return re.search(r";|&|<|>|\\|`|\$\(|['\"]", outside) is not None


@SETTINGS
@given(commands)
def test_parser_never_crashes_and_never_accepts_a_live_metacharacter(command: str) -> None:
    try:
        pipeline = check(command)
    except CommandRefused as refused:
        assert refused.rule
        assert isinstance(refused.position, int | None)
        return
    assert not live_metacharacter(command), command
    assert all(stage and stage[0] for stage in pipeline.stages)
    assert check(pipeline.display).stages == pipeline.stages


@SETTINGS
@given(commands)
def test_the_fast_paths_agree_with_the_full_scan(command: str) -> None:
    try:
        reference = _split(command)
    except CommandRefused:
        assert _split_plain(command) is None and _split_quoted(command) is None
        return
    for fast in (_split_plain(command), _split_quoted(command)):
        assert fast is None or fast == reference


@SETTINGS
@given(st.text(max_size=60))
def test_parser_never_crashes_on_any_text(command: str) -> None:
    with contextlib.suppress(CommandRefused):
        check(command)


_plain = st.text(alphabet="abcdefxyz0123456789-_./=:,", min_size=1, max_size=8)
_single = st.text(alphabet='ab ;&|<>`$()\\"*', max_size=6).map(lambda t: f"'{t}'")
_double = st.text(alphabet="ab ;&|<>*'", max_size=6).map(lambda t: f'"{t}"')
_words = st.lists(st.one_of(_plain, _plain, _single, _double), min_size=1, max_size=6)


@st.composite
def with_inserted_meta(draw: st.DrawFn) -> tuple[str, str, int]:
    words = ["ls", *draw(_words)]
    plain = [i for i, word in enumerate(words) if not word.startswith(("'", '"'))]
    index = draw(st.sampled_from(plain))
    offset = draw(st.integers(min_value=0, max_value=len(words[index])))
    meta = draw(st.sampled_from(SPEC_METACHARACTERS))
    words[index] = words[index][:offset] + meta + words[index][offset:]
    position = sum(len(word) + 1 for word in words[:index]) + offset
    return " ".join(words), meta, position


@SETTINGS
@given(with_inserted_meta())
def test_an_unquoted_metacharacter_anywhere_is_refused_with_token_and_position(
    case: tuple[str, str, int],
) -> None:
    command, meta, position = case
    with pytest.raises(MetacharacterRefused) as refused:
        check(command)
    assert (refused.value.token, refused.value.position) == (meta, position)


@settings(max_examples=60, deadline=None)
@given(with_inserted_meta())
def test_nothing_with_an_unquoted_metacharacter_reaches_exec(case: tuple[str, str, int]) -> None:
    command, _meta, _position = case
    started: list[object] = []

    def spy(*args: object, **kwargs: object) -> None:
        started.append(args)
        raise AssertionError("a process was started")

    async def attempt() -> None:
        with pytest.raises(MetacharacterRefused):
            await run(command, RunSpec())

    # Every process Python starts (the runner's stages, asyncio's, version reports) goes through Popen.
    with mock.patch.object(subprocess, "Popen", spy):
        anyio.run(attempt)
    assert started == []
