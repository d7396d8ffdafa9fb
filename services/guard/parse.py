"""Parse a command into a pipeline of argv stages and apply the guard rules (pure: no I/O).

Words are split the POSIX way on blanks (space, tab) with single and double quotes; nothing is
ever expanded and no shell ever runs. The rule on quoting is a shell's own: a metacharacter of
the spec's list is refused wherever a POSIX shell would act on it, so nothing in an accepted
command could chain, redirect or substitute commands even if the text did reach a shell.

* Unquoted: ``;`` ``&&`` ``||`` ``&`` ``\\`` ``$(`` backtick ``<`` ``>`` ``>>`` and newline are
  refused (``&``, background, is the one addition to the spec's list). ``|`` separates stages.
* Inside single quotes everything is literal, except newline.
* Inside double quotes a shell still acts on ``$(``, backtick and ``\\``: they are refused;
  ``;`` ``&`` ``|`` ``<`` ``>`` are literal there.
* Newline and other control characters (NUL, CR...) are refused everywhere, quoted or not.
* ``$NAME``, ``~``, ``*``, ``#`` are passed literally: nothing expands them.
"""

from __future__ import annotations

import re
import shlex

import msgspec

from services.guard.errors import (
    ControlCharacterRefused,
    EmptyCommand,
    ForbiddenBinary,
    MetacharacterRefused,
    PipeTargetRefused,
    RelativeProgramPath,
    UnterminatedQuote,
)
from services.guard.filters import check_filter
from services.guard.pins import PinTable, is_forbidden
from services.guard.policy import DEFAULT_POLICY, GuardPolicy

SPEC_METACHARACTERS: tuple[str, ...] = (";", "&&", "||", "\\", "$(", "`", "<", ">", ">>", "\n")
"""The spec's list of refused shell metacharacters (the guard also refuses a lone ``&``)."""

_TOKEN = re.compile(
    r"(?P<blank>[ \t]+)"
    r"|(?P<word>[^ \t'\"\\;&|<>`$\x00-\x1f\x7f]+)"
    r"|'(?P<squote>[^']*)'"
    r'|"(?P<dquote>[^"]*)"'
    r"|(?P<meta>&&|\|\||>>|\$\(|[;&<>\\`\n])"
    r"|(?P<pipe>\|)"
    r"|(?P<dollar>\$)"
    r"|(?P<open>['\"])"
    r"|(?P<control>[\s\S])"  # what is left: the control characters
)
_PLAIN = re.compile(r"[^'\"\\;&<>`$\x00-\x08\x0a-\x1f\x7f]*\Z")
_WORD = (  # possessive quantifiers: a refusal can never make the match backtrack
    r"(?:[^ \t'\"\\;&|<>`$\x00-\x1f\x7f]++"
    r"|'[^'\x00-\x08\x0a-\x1f\x7f]*+'"
    r"|\"[^\"\\`$\x00-\x08\x0a-\x1f\x7f]*+(?:\$(?!\()[^\"\\`$\x00-\x08\x0a-\x1f\x7f]*+)*+\""
    r"|\$(?!\())++"
)
_VALID = re.compile(rf"[ \t]*{_WORD}(?:[ \t]+{_WORD}|[ \t]*\|[ \t]*{_WORD})*[ \t]*\Z")
_WORD_OR_PIPE = re.compile(rf"({_WORD})|\|")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_IN_SINGLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_IN_DOUBLE = re.compile(r"\$\(|[`\\]|[\x00-\x08\x0a-\x1f\x7f]")

_WHY = {
    ";": "it would chain a second command",
    "&&": "it would chain a second command",
    "||": "it would chain a second command",
    "&": "it would run the command in the background",
    "\\": "it escapes what a shell would otherwise act on",
    "$(": "it would substitute another command's output",
    "`": "it would substitute another command's output",
    "<": "it would redirect input from a file",
    ">": "it would redirect output to a file",
    ">>": "it would append output to a file",
    "\n": "it would start another command",
}


class Pipeline(msgspec.Struct, frozen=True):
    """A checked command: argv stages joined by pipes."""

    stages: tuple[tuple[str, ...], ...]

    @property
    def display(self) -> str:
        """The canonical command line: each word shell-quoted as needed, stages joined by `` | ``."""
        return " | ".join(shlex.join(argv) for argv in self.stages)

    @property
    def programs(self) -> tuple[str, ...]:
        """The program of each stage, as written."""
        return tuple(stage[0] for stage in self.stages)


def check(command: str, policy: GuardPolicy = DEFAULT_POLICY, pins: PinTable | None = None) -> Pipeline:
    """Parse ``command`` and apply every pure guard rule; raise a :class:`CommandRefused` or return
    the :class:`Pipeline`. With ``pins``, every program must be pinned (versions are checked when
    the step runs); without, pins are not looked at."""
    stages, starts = _split_plain(command) or _split_quoted(command) or _split(command)
    for index in range(len(stages)):
        argv, where = stages[index], starts[index]
        program, pos = argv[0], where[0]
        if not program:
            raise EmptyCommand(
                f"the program name at position {pos} is empty; name the program to run.",
                position=pos,
            )
        if index == 0:
            _check_program(program, pos)
        else:
            _check_filter_stage(argv, where, policy)
        if pins is not None:
            pins.require(program, pos)
    return Pipeline(tuple(tuple(argv) for argv in stages))


def _split_plain(command: str) -> tuple[list[list[str]], list[list[int]]] | None:
    """The most common case at C speed: ASCII, no quotes, no metacharacters, no empty stage."""
    if not (command.isascii() and _PLAIN.match(command)):
        return None
    stages = [part.split() for part in command.split("|")]
    if not all(stages):
        return None
    starts: list[list[int]] = []
    cursor = 0
    for argv in stages:
        where = []
        for word in argv:
            cursor = command.find(word, cursor)
            where.append(cursor)
            cursor += len(word)
        starts.append(where)
    return stages, starts


def _split_quoted(command: str) -> tuple[list[list[str]], list[list[int]]] | None:
    """The quoted common case: one C-level match validates the whole command (no live
    metacharacter, no control character, no open quote, no empty stage), then one step per word."""
    if not _VALID.match(command):
        return None
    stages: list[list[str]] = [[]]
    starts: list[list[int]] = [[]]
    cursor = 0
    for raw in _WORD_OR_PIPE.findall(command):
        if not raw:  # a pipe
            stages.append([])
            starts.append([])
            continue
        cursor = command.find(raw, cursor)
        starts[-1].append(cursor)
        cursor += len(raw)
        if "'" in raw:
            raw = raw.replace("'", "") if '"' not in raw else _QUOTED.sub(_unquote, raw)
        elif '"' in raw:
            raw = raw.replace('"', "")
        stages[-1].append(raw)
    return stages, starts


def _unquote(quoted: re.Match[str]) -> str:
    single: str | None = quoted[1]
    return single if single is not None else quoted[2]


def _check_program(program: str, pos: int) -> None:
    if "/" in program and not program.startswith("/"):
        raise RelativeProgramPath(
            f"program {program!r} at position {pos} is a relative path, which would depend on the "
            "working directory; use its name (found on the step's PATH) or its absolute path.",
            token=program,
            position=pos,
        )
    if is_forbidden(program):
        raise ForbiddenBinary(
            f"{program!r} at position {pos} is a shell, interpreter or program runner; UPM never "
            "runs one. Call the CLI that does the work directly.",
            token=program,
            position=pos,
        )


def _check_filter_stage(argv: list[str], where: list[int], policy: GuardPolicy) -> None:
    program, pos = argv[0], where[0]
    if program not in policy.pipe_allow_list:
        allowed = ", ".join(policy.pipe_allow_list)
        raise PipeTargetRefused(
            f"{program!r} at position {pos} may not follow a pipe: only {allowed} may "
            "(filters named without a path). Move the work into its own plan step.",
            token=program,
            position=pos,
        )
    spec = policy.filter_spec(program)
    if spec is not None:
        check_filter(argv, where, spec)


def _split(command: str) -> tuple[list[list[str]], list[list[int]]]:
    """Words per stage, and each word's start offset; refuses metacharacters as it scans."""
    stages: list[list[str]] = [[]]
    starts: list[list[int]] = [[]]
    parts: list[str] = []
    word_start = -1
    last_pipe = -1
    for found in _TOKEN.finditer(command):
        pos, kind = found.start(), found.lastgroup
        if kind in ("blank", "pipe"):
            if word_start >= 0:
                stages[-1].append("".join(parts))
                starts[-1].append(word_start)
                parts, word_start = [], -1
            if kind == "pipe":
                if not stages[-1]:
                    raise EmptyCommand(
                        f"'|' at position {pos} has no command before it; pipe from a command.",
                        token="|",
                        position=pos,
                    )
                stages.append([])
                starts.append([])
                last_pipe = pos
        else:
            if word_start < 0:
                word_start = pos
            if kind == "squote":
                _scan_quoted(_IN_SINGLE, found["squote"], pos + 1, "single")
                parts.append(found["squote"])
            elif kind == "dquote":
                _scan_quoted(_IN_DOUBLE, found["dquote"], pos + 1, "double")
                parts.append(found["dquote"])
            elif kind == "meta":
                raise _meta(found["meta"], pos, quoted="")
            elif kind == "open":
                raise UnterminatedQuote(
                    f"the quote {found.group()} at position {pos} is never closed; close it.",
                    token=found.group(),
                    position=pos,
                )
            elif kind == "control":
                raise _control(found.group(), pos)
            else:
                parts.append(found.group())
    if word_start >= 0:
        stages[-1].append("".join(parts))
        starts[-1].append(word_start)
    if not stages[-1]:
        if last_pipe >= 0:
            raise EmptyCommand(
                f"'|' at position {last_pipe} leads nowhere; name a filter after it.",
                token="|",
                position=last_pipe,
            )
        raise EmptyCommand("the command is empty; give a program and its arguments.", position=0)
    return stages, starts


def _scan_quoted(bad: re.Pattern[str], text: str, offset: int, kind: str) -> None:
    found = bad.search(text)
    if found is not None:
        token, pos = found.group(), offset + found.start()
        raise _meta(token, pos, quoted=kind) if token in _WHY else _control(token, pos)


def _meta(token: str, pos: int, *, quoted: str) -> MetacharacterRefused:
    if token == "\n":
        advice = "Newlines are refused everywhere, quoted or not: make each command its own plan step."
    elif quoted:
        advice = f"Inside {quoted} quotes a shell still acts on {token!r}; put literal text in single quotes."
    elif token in ("\\", "$(", "`"):
        advice = "UPM never runs a shell; put literal text in single quotes."
    else:
        advice = (
            "UPM never runs a shell: make each command its own plan step "
            "(or single-quote the character if it is literal data)."
        )
    return MetacharacterRefused(
        f"shell metacharacter {token!r} at position {pos} is refused: {_WHY[token]}. {advice}",
        token=token,
        position=pos,
    )


def _control(token: str, pos: int) -> ControlCharacterRefused:
    return ControlCharacterRefused(
        f"control character {token!r} at position {pos} is refused: commands are one line of "
        "printable text. Remove it.",
        token=token,
        position=pos,
    )
