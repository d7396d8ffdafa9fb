"""Option rules for the filters allowed after a pipe (pure).

A filter after ``|`` may read stdin and write stdout, nothing else. Each filter has an explicit
table of the options it may take (anything not in the table is refused, so GNU long-option
abbreviations and options added by newer versions are refused too); the options that would
write files, read files or run programs are named with the reason, for a clearer message. A
filter has no file operands: the only operands allowed are its program (grep's pattern, jq's
filter) and ``-`` (stdin) where the tool reads it that way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from services.guard.errors import FilterOperandRefused, FilterOptionRefused, FilterProgramRefused

OPTIONAL = -1
"""Arity of a long option whose value can only be attached with ``=`` (``--color[=WHEN]``)."""

_NUMERIC = re.compile(r"-[0-9]+")


class FilterSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What one filter may be given after a pipe.

    ``short`` maps an option letter to its arity (0 or 1), ``long`` a long option name (without
    ``--``) to its arity (0, 1, 2 or :data:`OPTIONAL`). ``refused`` maps an option as spelled
    (``-o``, ``--output``) to why it is refused. ``data_operands``: how many leading operands are
    data, not files (grep's pattern, jq's program, tr's two sets); one fewer when one of
    ``program_options`` gave the program. ``program_refused`` is a regex refused inside the first
    data operand (``program_refused_why`` says why).
    """

    name: str
    short: dict[str, int] = msgspec.field(default_factory=dict)
    long: dict[str, int] = msgspec.field(default_factory=dict)
    refused: dict[str, str] = msgspec.field(default_factory=dict)
    data_operands: int = 0
    program_options: frozenset[str] = frozenset()
    numeric_shorthand: bool = False
    stdin_dash: bool = True
    operand_why: str = "it would be read as a file"
    program_refused: str = ""
    program_refused_why: str = ""


def _flags(letters: str, arity: int) -> dict[str, int]:
    return dict.fromkeys(letters, arity)


def _names(names: str, arity: int) -> dict[str, int]:
    return dict.fromkeys(names.split(), arity)


_READS_FILES = "it reads files"

GREP = FilterSpec(
    name="grep",
    short=_flags("EFGPiyvwxcLloqsbHhnTZzaUI", 0) | _flags("emABC", 1),
    long=_names(
        "extended-regexp fixed-strings basic-regexp perl-regexp ignore-case no-ignore-case "
        "invert-match word-regexp line-regexp count files-without-match files-with-matches "
        "only-matching quiet silent no-messages byte-offset with-filename no-filename line-number "
        "initial-tab null null-data text binary line-buffered",
        0,
    )
    | _names("regexp max-count after-context before-context context label binary-files", 1)
    | _names("color colour", OPTIONAL),
    refused={
        "-f": "it reads patterns from a file",
        "--file": "it reads patterns from a file",
        "-r": "it reads files and directories recursively",
        "-R": "it reads files and directories recursively",
        "--recursive": "it reads files and directories recursively",
        "--dereference-recursive": "it reads files and directories recursively",
        "-d": "it decides how directories are read",
        "--directories": "it decides how directories are read",
        "-D": "it decides how devices are read",
        "--devices": "it decides how devices are read",
        "--include": "it selects files to read",
        "--exclude": "it selects files to read",
        "--exclude-dir": "it selects directories to read",
        "--exclude-from": "it reads a file",
    },
    data_operands=1,
    program_options=frozenset({"-e", "--regexp"}),
    numeric_shorthand=True,
)

JQ = FilterSpec(
    name="jq",
    short=_flags("crjasneSCMR", 0),
    long=_names(
        "compact-output raw-output join-output ascii-output slurp null-input exit-status sort-keys "
        "color-output monochrome-output raw-input tab seq stream unbuffered",
        0,
    )
    | _names("indent", 1)
    | _names("arg argjson", 2),
    refused={
        "-f": "it reads the program from a file",
        "--from-file": "it reads the program from a file",
        "--rawfile": _READS_FILES,
        "--slurpfile": _READS_FILES,
        "--argfile": _READS_FILES,
        "-L": "it loads modules from a directory",
        "--run-tests": "it reads tests from a file",
    },
    data_operands=1,
    stdin_dash=False,
    program_refused=(
        r"(?<![\w.$])(?:import|include|input_filename|env|modulemeta|get_search_list)(?!\w)"
        r"|\$(?:ENV|__prog_args)(?!\w)"
    ),
    program_refused_why=(
        "it reads files or the environment (import, include, input_filename, env, $ENV, modulemeta "
        "and get_search_list are refused, even inside string literals)"
    ),
)

WC = FilterSpec(
    name="wc",
    short=_flags("cmlLw", 0),
    long=_names("bytes chars lines max-line-length words", 0) | _names("total", 1),
    refused={"--files0-from": "it reads a list of files to count"},
)

HEAD = FilterSpec(
    name="head",
    short=_flags("qvz", 0) | _flags("cn", 1),
    long=_names("quiet silent verbose zero-terminated", 0) | _names("bytes lines", 1),
    numeric_shorthand=True,
)

TAIL = FilterSpec(
    name="tail",
    short=_flags("qvz", 0) | _flags("cn", 1),
    long=_names("quiet silent verbose zero-terminated", 0) | _names("bytes lines", 1),
    refused={
        "-f": "it follows files",
        "-F": "it follows files",
        "--follow": "it follows files",
    },
    numeric_shorthand=True,
)

CUT = FilterSpec(
    name="cut",
    short=_flags("nsz", 0) | _flags("bcdf", 1),
    long=_names("complement only-delimited zero-terminated", 0)
    | _names("bytes characters fields delimiter output-delimiter", 1),
)

SORT = FilterSpec(
    name="sort",
    short=_flags("bdfghiMnRrVcCmsuz", 0) | _flags("ktS", 1),
    long=_names(
        "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort human-numeric-sort "
        "ignore-nonprinting month-sort numeric-sort random-sort reverse version-sort stable unique "
        "zero-terminated merge debug",
        0,
    )
    | _names("key field-separator buffer-size sort parallel", 1)
    | _names("check", OPTIONAL),
    refused={
        "-o": "it writes a file",
        "--output": "it writes a file",
        "-T": "it writes temporary files into a directory",
        "--temporary-directory": "it writes temporary files into a directory",
        "--compress-program": "it runs a program",
        "--files0-from": "it reads a list of files",
        "--random-source": "it reads a file",
    },
)

UNIQ = FilterSpec(
    name="uniq",
    short=_flags("cdDiuz", 0) | _flags("fsw", 1),
    long=_names("count repeated ignore-case unique zero-terminated", 0)
    | _names("skip-fields skip-chars check-chars", 1)
    | _names("all-repeated group", OPTIONAL),
    operand_why="uniq reads its INPUT operand and writes its OUTPUT operand as files",
)

BUILTIN_FILTERS: Mapping[str, FilterSpec] = {
    spec.name: spec for spec in (GREP, JQ, WC, HEAD, TAIL, CUT, SORT, UNIQ)
}
"""Option rules for the eight filters of the spec's default allow-list."""

_RULES = "A filter after | may only read stdin and write stdout."


def check_filter(argv: Sequence[str], starts: Sequence[int], spec: FilterSpec) -> None:
    """Refuse ``argv`` (one stage after a pipe) if it could touch anything but stdin and stdout.

    ``starts`` holds each word's offset in the command string, for the error position. Options
    are recognised wherever they appear until ``--`` (GNU tools permute their arguments).
    Accepted filters are remembered (``wc -l`` and ``head -n 5`` come back all the time).
    """
    key = (id(spec), tuple(argv))
    if _ACCEPTED.get(key) is spec:  # the entry keeps its spec alive, so the id is not reused
        return
    _check_words(argv, starts, spec)
    if len(_ACCEPTED) >= _ACCEPTED_MAX:
        _ACCEPTED.clear()
    _ACCEPTED[key] = spec


_ACCEPTED: dict[tuple[int, tuple[str, ...]], FilterSpec] = {}
_ACCEPTED_MAX = 4096


def _check_words(argv: Sequence[str], starts: Sequence[int], spec: FilterSpec) -> None:
    operands: list[tuple[str, int]] = []
    program_given = False
    only_operands = False
    i = 1
    while i < len(argv):
        arg, pos = argv[i], starts[i]
        i += 1
        if only_operands or arg == "-" or not arg.startswith("-"):
            operands.append((arg, pos))
        elif arg == "--":
            only_operands = True
        elif arg.startswith("--"):
            option, needed = _long(spec, arg, pos)
            i = _consume(spec, argv, i, needed, option, pos)
            program_given = program_given or option in spec.program_options
        elif not (spec.numeric_shorthand and _NUMERIC.fullmatch(arg)):
            option, needed = _short_cluster(spec, arg, pos)
            i = _consume(spec, argv, i, needed, option, pos)
            program_given = program_given or option in spec.program_options
    data = operands[: max(0, spec.data_operands - int(program_given))]
    if data and not program_given:
        _check_program(spec, *data[0])
    _check_operands(spec, operands[len(data) :])


def _long(spec: FilterSpec, arg: str, pos: int) -> tuple[str, int]:
    """The option and how many following words it consumes."""
    name, eq, value = arg[2:].partition("=")
    option = "--" + name
    _refuse_named(spec, option, arg, pos)
    arity = spec.long.get(name)
    if arity is None:
        raise FilterOptionRefused(
            f"{spec.name} option {option!r} at position {pos} is not on the allow-list of {spec.name} "
            f"options (abbreviations are refused too; spell allowed options in full). {_RULES}",
            token=option,
            position=pos,
        )
    if eq and arity == 0:
        raise FilterOptionRefused(
            f"{spec.name} option {option!r} at position {pos} takes no value; drop '={value}'.",
            token=option,
            position=pos,
        )
    if eq and arity == 2:
        raise FilterOptionRefused(
            f"{spec.name} option {option!r} at position {pos} takes two separate arguments, not '='.",
            token=option,
            position=pos,
        )
    return option, (0 if eq or arity == OPTIONAL else arity)


def _short_cluster(spec: FilterSpec, arg: str, pos: int) -> tuple[str, int]:
    """Walk ``-abc``; returns the last option and whether it needs the next word as its value."""
    option = arg
    for j, letter in enumerate(arg[1:], start=1):
        option = "-" + letter
        _refuse_named(spec, option, arg, pos)
        arity = spec.short.get(letter)
        if arity is None:
            raise FilterOptionRefused(
                f"{spec.name} option {option!r} (in {arg!r} at position {pos}) is not on the allow-list "
                f"of {spec.name} options. {_RULES}",
                token=option,
                position=pos,
            )
        if arity == 1:
            return option, (0 if j + 1 < len(arg) else 1)
    return option, 0


def _consume(spec: FilterSpec, argv: Sequence[str], i: int, needed: int, option: str, pos: int) -> int:
    if i + needed > len(argv):
        raise FilterOptionRefused(
            f"{spec.name} option {option!r} at position {pos} needs {needed} argument(s) and the "
            "stage ends first; give the value.",
            token=option,
            position=pos,
        )
    return i + needed


def _refuse_named(spec: FilterSpec, option: str, arg: str, pos: int) -> None:
    why = spec.refused.get(option)
    if why is None and option.startswith("--") and option[2:] not in spec.long and len(option) > 3:
        for refused, reason in spec.refused.items():
            if refused.startswith(option):
                why = f"it abbreviates {refused!r}, and {reason}"
                break
    if why is not None:
        where = f"at position {pos}" if arg == option else f"(in {arg!r} at position {pos})"
        raise FilterOptionRefused(
            f"{spec.name} option {option!r} {where} is refused: {why}. {_RULES}",
            token=option,
            position=pos,
        )


def _check_program(spec: FilterSpec, program: str, pos: int) -> None:
    if spec.program_refused:
        found = re.search(spec.program_refused, program)
        if found:
            raise FilterProgramRefused(
                f"{spec.name} program at position {pos} uses {found.group()!r}, which is refused: "
                f"{spec.program_refused_why}. {_RULES}",
                token=found.group(),
                position=pos,
            )


def _check_operands(spec: FilterSpec, operands: list[tuple[str, int]]) -> None:
    dash_seen = False
    for operand, pos in operands:
        if operand == "-" and spec.stdin_dash and not dash_seen:
            dash_seen = True
            continue
        raise FilterOperandRefused(
            f"{spec.name} operand {operand!r} at position {pos} is refused: {spec.operand_why}. "
            f"{_RULES} Put the file's reading in the pipeline's first command instead.",
            token=operand,
            position=pos,
        )
