"""Filters after a pipe: stdin in, stdout out, nothing else (option and operand rules)."""

from __future__ import annotations

import pytest

from services.guard import (
    FilterOperandRefused,
    FilterOptionRefused,
    FilterProgramRefused,
    FilterSpec,
    GuardPolicy,
    check,
)

ALLOWED = [
    "grep -E -i 'a|b'",
    "grep -e x -e y -",
    "grep -vc pattern",
    "grep -C5 x",
    "grep -5 -n x",
    "grep --color=never --max-count 3 x",
    "grep --regexp=x",
    "grep -- -v",
    "jq -r '.items[].metadata.name'",
    "jq -rc .",
    "jq --arg name v '.[$name]'",
    "jq --argjson n 1 -n '$n + 1'",
    "jq --indent 4 -S .",
    "jq -e '.x // empty'",
    "jq -R -s 'split(\"\\n\")'",
    "jq '.env_name'",
    "wc -l",
    "wc --lines -",
    "wc --total=never -c",
    "head -n 5",
    "head -5",
    "head --bytes=100",
    "tail -n +2",
    "tail -c 10",
    "cut -d: -f1",
    "cut -d ' ' -f 1,2 --complement",
    "cut --output-delimiter=, -f1",
    "sort -k2,2n -t, -r",
    "sort -rnu",
    "sort --key=1 --stable -S 1M",
    "sort -m --parallel=2",
    "uniq -c",
    "uniq -f 1 --all-repeated=separate",
    "uniq -",
]


@pytest.mark.parametrize("filter_", ALLOWED)
def test_allowed_filter_forms(filter_: str) -> None:
    check(f"cat f | {filter_}")


REFUSED_OPTIONS = [
    ("sort -o /etc/passwd", "-o", "writes a file"),
    ("sort -uo/tmp/x", "-o", "writes a file"),
    ("sort --output=/tmp/x", "--output", "writes a file"),
    ("sort --output /tmp/x", "--output", "writes a file"),
    ("sort --out=/tmp/x", "--out", "abbreviates '--output'"),
    ("sort --compress-program=sh", "--compress-program", "runs a program"),
    ("sort --compress-p=sh", "--compress-p", "runs a program"),
    ("sort -T /tmp", "-T", "temporary files"),
    ("sort --files0-from=list", "--files0-from", "list of files"),
    ("sort --random-source=/dev/sda", "--random-source", "reads a file"),
    ("grep -f patterns", "-f", "from a file"),
    ("grep --file=patterns", "--file", "from a file"),
    ("grep -r x /", "-r", "recursively"),
    ("grep -rn x /etc", "-r", "recursively"),
    ("grep -nR x", "-R", "recursively"),
    ("grep -d recurse x", "-d", "directories"),
    ("grep --include=*.pem x", "--include", "selects files"),
    ("grep --exclude-from=f x", "--exclude-from", "reads a file"),
    ("jq -f prog.jq", "-f", "from a file"),
    ("jq --from-file prog.jq", "--from-file", "from a file"),
    ("jq --rawfile k /etc/shadow .", "--rawfile", "reads files"),
    ("jq --slurpfile k /etc/passwd .", "--slurpfile", "reads files"),
    ("jq --argfile k /etc/passwd .", "--argfile", "reads files"),
    ("jq -L /tmp .", "-L", "modules"),
    ("jq -rL/tmp .", "-L", "modules"),
    ("wc --files0-from=/tmp/list", "--files0-from", "list of files"),
    ("tail -f", "-f", "follows files"),
    ("tail --follow=name", "--follow", "follows files"),
]


@pytest.mark.parametrize(("filter_", "token", "why"), REFUSED_OPTIONS)
def test_options_that_write_read_or_run_are_refused(filter_: str, token: str, why: str) -> None:
    command = f"cat f | {filter_}"
    with pytest.raises(FilterOptionRefused) as refused:
        check(command)
    error = refused.value
    assert (error.rule, error.token) == ("filter-option", token)
    assert why in str(error)
    assert error.position == command.index(filter_.split()[1])


@pytest.mark.parametrize(
    "filter_",
    ["grep --unknown x", "sort -X", "jq --args . a b", "jq --run-tests", "head --follow", "wc -x", "cut -Q"],
)
def test_options_not_on_the_filter_allow_list_are_refused(filter_: str) -> None:
    with pytest.raises(FilterOptionRefused, match=r"allow-list of|is refused"):
        check(f"cat f | {filter_}")


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ("wc --lines=5", "takes no value"),
        ("jq --arg=a b .", "two separate arguments"),
        ("head -n", "needs 1 argument"),
        ("jq . --arg a", "needs 2 argument"),
    ],
)
def test_malformed_option_values(filter_: str, message: str) -> None:
    with pytest.raises(FilterOptionRefused, match=message):
        check(f"cat f | {filter_}")


@pytest.mark.parametrize(
    ("filter_", "token"),
    [
        ("head /etc/shadow", "/etc/shadow"),
        ("tail -n 1 /var/log/auth.log", "/var/log/auth.log"),
        ("wc -l /etc/passwd", "/etc/passwd"),
        ("cut -f1 /etc/passwd", "/etc/passwd"),
        ("sort /etc/passwd", "/etc/passwd"),
        ("uniq in", "in"),
        ("uniq - out", "out"),
        ("grep x /etc/passwd", "/etc/passwd"),
        ("grep -e x secrets.txt", "secrets.txt"),
        ("jq . /etc/passwd", "/etc/passwd"),
        ("jq . -", "-"),
        ("head - -", "-"),
        ("sort -- -o", "-o"),
    ],
)
def test_file_operands_are_refused_after_a_pipe(filter_: str, token: str) -> None:
    with pytest.raises(FilterOperandRefused) as refused:
        check(f"cat f | {filter_}")
    assert (refused.value.rule, refused.value.token) == ("filter-operand", token)


def test_uniq_output_operand_is_explained() -> None:
    with pytest.raises(FilterOperandRefused, match="writes its OUTPUT operand"):
        check("cat f | uniq - out")


@pytest.mark.parametrize(
    ("program", "token"),
    [
        ("input_filename", "input_filename"),
        ('import "x" as x; .', "import"),
        ('include "lib"; .', "include"),
        ("env.AWS_SECRET_ACCESS_KEY", "env"),
        ("$ENV.HOME", "$ENV"),
        ('"\\(env)"', "env"),
        ("modulemeta", "modulemeta"),
        ("get_search_list", "get_search_list"),
    ],
)
def test_jq_programs_that_read_files_or_the_environment_are_refused(program: str, token: str) -> None:
    with pytest.raises(FilterProgramRefused) as refused:
        check(f"cat f | jq '{program}'")
    assert (refused.value.rule, refused.value.token) == ("filter-program", token)


def test_the_first_stage_is_a_cli_not_a_filter() -> None:
    check("grep -r x /etc/hosts")  # only stages after a pipe are filters
    check("sort -o out in")


def test_a_tenant_can_allow_another_filter_with_its_own_rules() -> None:
    tr = FilterSpec(name="tr", short={"d": 0, "s": 0, "c": 0}, data_operands=2)
    policy = GuardPolicy(pipe_allow_list=("grep", "tr"), filters=(tr,))
    assert check("cat f | tr -d a-z", policy).stages[1] == ("tr", "-d", "a-z")
    check("cat f | tr a-z A-Z", policy)
    with pytest.raises(FilterOperandRefused):
        check("cat f | tr a b /etc/passwd", policy)
