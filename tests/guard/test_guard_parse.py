"""The pure check: word splitting, metacharacters, quoting, the pipe allow-list, programs."""

from __future__ import annotations

import pytest

from services.guard import (
    DEFAULT_PINS,
    DEFAULT_PIPE_ALLOW_LIST,
    SPEC_METACHARACTERS,
    CommandRefused,
    ControlCharacterRefused,
    EmptyCommand,
    ForbiddenBinary,
    GuardPolicy,
    MetacharacterRefused,
    Pin,
    PinTable,
    PipeTargetRefused,
    PolicyInvalid,
    RelativeProgramPath,
    UnpinnedBinary,
    UnterminatedQuote,
    check,
)

# "{m}" marks where the metacharacter goes: start, end, alone, glued to words, after a pipe.
TEMPLATES = (
    "{m}ls -l",
    "ls{m}",
    "ls -l {m}",
    "ls {m} -l",
    "ls -l{m}x",
    "ls{m}-l /tmp",
    "ls -l /tmp/a{m}b",
    "{m}",
    "ls -l | grep x{m}",
    "ls -l | wc -l {m} x",
    "ls 'quoted ok' {m}x",
)


@pytest.mark.parametrize("meta", SPEC_METACHARACTERS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_spec_metacharacter_is_refused_in_every_position(meta: str, template: str) -> None:
    command = template.replace("{m}", meta)
    with pytest.raises(MetacharacterRefused) as refused:
        check(command)
    error = refused.value
    assert error.rule == "meta"
    assert error.token == meta
    assert error.position == template.index("{m}")
    assert repr(meta) in str(error) and f"position {error.position}" in str(error)


def test_spec_list_is_exactly_the_spec() -> None:
    assert SPEC_METACHARACTERS == (";", "&&", "||", "\\", "$(", "`", "<", ">", ">>", "\n")
    assert DEFAULT_PIPE_ALLOW_LIST == ("grep", "jq", "wc", "head", "tail", "cut", "sort", "uniq")


@pytest.mark.parametrize(
    ("command", "token", "position"),
    [
        ("sleep 1 &", "&", 8),  # background: the one addition to the spec's list
        ("ls >> log", ">>", 3),
        ("ls && rm x", "&&", 3),
        ("ls || rm x", "||", 3),
        ('echo "$(id)"', "$(", 6),
        ('echo "`id`"', "`", 6),
        ('echo "a\\"b"', "\\", 7),
        ("echo 'a\nb'", "\n", 7),
        ('echo "a\nb"', "\n", 7),
    ],
)
def test_metacharacters_live_in_double_quotes_and_newline_everywhere(
    command: str, token: str, position: int
) -> None:
    with pytest.raises(MetacharacterRefused) as refused:
        check(command)
    assert (refused.value.token, refused.value.position) == (token, position)


def test_double_quote_advice_says_to_use_single_quotes() -> None:
    with pytest.raises(MetacharacterRefused, match="single quotes"):
        check('echo "$(id)"')


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("grep 'a;b' f", ("grep", "a;b", "f")),
        ('grep "a;b && c || d > e < f >> g | h" f', ("grep", "a;b && c || d > e < f >> g | h", "f")),
        ("echo '$(id)' '`id`' 'a\\b'", ("echo", "$(id)", "`id`", "a\\b")),
        ("echo $HOME ~ * '#' x#y", ("echo", "$HOME", "~", "*", "#", "x#y")),
        ("echo a''b \"\" ''", ("echo", "ab", "", "")),
        ("echo 'it'\"'\"'s'", ("echo", "it's")),
        ("echo\t a \t b  ", ("echo", "a", "b")),
        ('echo "$x"', ("echo", "$x")),
    ],
)
def test_quoting_keeps_data_literal(command: str, argv: tuple[str, ...]) -> None:
    assert check(command).stages == (argv,)


def test_a_quoted_pipe_is_data_and_an_unquoted_one_splits_stages() -> None:
    pipeline = check("cat f | jq '.a | .b' | wc -l")
    assert pipeline.stages == (("cat", "f"), ("jq", ".a | .b"), ("wc", "-l"))
    assert pipeline.programs == ("cat", "jq", "wc")


@pytest.mark.parametrize("char", ["\x00", "\r", "\x1b", "\x7f", "\x0b"])
def test_control_characters_are_refused_quoted_or_not(char: str) -> None:
    for command in (f"ls{char}", f"ls '{char}'", f'ls "{char}"'):
        with pytest.raises(ControlCharacterRefused) as refused:
            check(command)
        assert refused.value.rule == "control"


@pytest.mark.parametrize(
    ("command", "rule", "position"),
    [
        ("", "empty", 0),
        ("   ", "empty", 0),
        ("| wc", "empty", 0),
        ("ls |", "empty", 3),
        ("ls | | wc", "empty", 5),
        ("'' -l", "empty", 0),
        ("ls 'x", "quote", 3),
        ('ls "x', "quote", 3),
    ],
)
def test_empty_commands_stages_and_open_quotes(command: str, rule: str, position: int) -> None:
    with pytest.raises((EmptyCommand, UnterminatedQuote)) as refused:
        check(command)
    assert isinstance(refused.value, CommandRefused)
    assert (refused.value.rule, refused.value.position) == (rule, position)


@pytest.mark.parametrize(
    "command",
    [
        "cat f | sh",
        "cat f | xargs rm -rf",
        "cat f | bash -c 'rm -rf /'",
        "cat f | awk '{print $1}'",
        "cat f | tee /etc/passwd",
        "cat f | sed -e s/a/b/",
        "cat f | python3 -c 'import os'",
        "cat f | /usr/bin/grep x",
        "cat f | ./grep x",
        "cat f | grep x | sh",
    ],
)
def test_pipes_only_into_the_allow_list(command: str) -> None:
    with pytest.raises(PipeTargetRefused) as refused:
        check(command)
    error = refused.value
    assert error.rule == "pipe-allow-list"
    assert command[error.position or 0 :].startswith(error.token)
    assert "grep, jq, wc, head, tail, cut, sort, uniq" in str(error)


def test_allowed_pipeline_of_filters() -> None:
    pipeline = check("kubectl get pods -o json | jq .x | wc -l")
    assert pipeline.stages == (("kubectl", "get", "pods", "-o", "json"), ("jq", ".x"), ("wc", "-l"))
    assert pipeline.display == "kubectl get pods -o json | jq .x | wc -l"


def test_allow_list_is_configurable_per_policy() -> None:
    narrow = GuardPolicy(pipe_allow_list=("grep",))
    check("cat f | grep x", narrow)
    with pytest.raises(PipeTargetRefused, match="only grep may"):
        check("cat f | wc -l", narrow)


@pytest.mark.parametrize("entry", ["sh", "tr", "/usr/bin/grep", ""])
def test_policy_refuses_allow_list_entries_it_cannot_guard(entry: str) -> None:
    with pytest.raises(PolicyInvalid):
        GuardPolicy(pipe_allow_list=("grep", entry))


@pytest.mark.parametrize(
    "program", ["sh", "bash", "/bin/sh", "env", "xargs", "python3", "perl", "sudo", "find"]
)
def test_shells_interpreters_and_runners_never_run(program: str) -> None:
    with pytest.raises(ForbiddenBinary) as refused:
        check(f"{program} -c x")
    assert refused.value.rule == "forbidden-binary"
    assert refused.value.position == 0


def test_relative_program_paths_are_refused() -> None:
    with pytest.raises(RelativeProgramPath) as refused:
        check("bin/tool --flag")
    assert refused.value.rule == "relative-path"


def test_pins_are_checked_for_presence_only_when_given() -> None:
    check("kubectl-1.29 create namespace team-alpha")  # no pin table: pins are not looked at
    with pytest.raises(UnpinnedBinary) as refused:
        check("kubectl-1.29 create namespace team-alpha", pins=DEFAULT_PINS)
    assert (refused.value.rule, refused.value.token, refused.value.position) == (
        "unpinned",
        "kubectl-1.29",
        0,
    )
    with pytest.raises(UnpinnedBinary) as filter_unpinned:
        check("cat f | grep y", pins=PinTable([Pin(binary="cat", version="9.1")]))
    assert (filter_unpinned.value.token, filter_unpinned.value.position) == ("grep", 8)
    check("cat /etc/hosts | grep -i local | wc -l", pins=DEFAULT_PINS)


def test_display_is_canonical_and_reparses_to_the_same_stages() -> None:
    pipeline = check("az aks create --name aks-demo --ssh-key-value \"ssh-rsa AAAA...\"   --x 'it'\"'\"'s'")
    assert (
        pipeline.display == "az aks create --name aks-demo --ssh-key-value 'ssh-rsa AAAA...' --x 'it'\"'\"'s'"
    )
    assert check(pipeline.display).stages == pipeline.stages


def test_the_spec_plan_commands_pass() -> None:
    for command in (
        "az group create --name rg-demo --location eastus",
        'az aks create --name aks-demo --resource-group rg-demo --node-count 2 --ssh-key-value "ssh-rsa AAAA..."',
        "kubectl-1.29 create namespace team-alpha",
        "kubectl-1.29 delete ns team-alpha",
    ):
        check(command)
