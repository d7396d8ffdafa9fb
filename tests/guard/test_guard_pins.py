"""Version pins: checked against the binary's own report, once per process, both versions named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from guard_helpers import MakeScript, pinned

from services.guard import (
    DEFAULT_PATH,
    DEFAULT_PINS,
    BinaryNotFound,
    ForbiddenBinary,
    Pin,
    PinMismatch,
    PinTable,
    PolicyInvalid,
    RunSpec,
    UnpinnedBinary,
    run,
)


async def test_default_pins_match_this_machine() -> None:
    for pin in DEFAULT_PINS:
        resolved = await DEFAULT_PINS.verify(pin.binary, path=DEFAULT_PATH)
        assert os.path.isabs(resolved) and resolved.endswith("/" + pin.binary)


def test_default_pins_cover_the_local_provider_and_the_filters() -> None:
    for program in (
        "mkdir",
        "chmod",
        "chown",
        "rm",
        "rmdir",
        "stat",
        "ln",
        "cp",
        "cat",
        "touch",
        "install",
        "dd",
    ):
        assert program in DEFAULT_PINS
    for program in ("grep", "jq", "wc", "head", "tail", "cut", "sort", "uniq"):
        assert program in DEFAULT_PINS
    assert "sh" not in DEFAULT_PINS and "test" not in DEFAULT_PINS


async def test_a_mismatch_is_refused_with_both_versions() -> None:
    table = PinTable([Pin(binary="ls", version="8.32")])
    with pytest.raises(PinMismatch) as refused:
        await table.verify("ls", path=DEFAULT_PATH)
    error = refused.value
    assert (error.rule, error.pinned, error.reported) == ("pin-mismatch", "8.32", "9.1")
    assert "8.32" in str(error) and "9.1" in str(error)


async def test_run_refuses_a_mismatched_pin_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec = RunSpec(pins=PinTable([Pin(binary="touch", version="7.0")]))
    with pytest.raises(PinMismatch):
        await run(f"touch {marker}", spec)
    assert not marker.exists()


def test_pin_prefix_matches_at_a_dot_boundary() -> None:
    pin = Pin(binary="kubectl", version="1.29")
    assert pin.accepts("1.29") and pin.accepts("1.29.4")
    assert not pin.accepts("1.290") and not pin.accepts("1.3")


async def test_versioned_binary_name_must_match_its_report(make_script: MakeScript) -> None:
    body = "if sys.argv[1:] == ['version', '--client']:\n    print('Client Version: v{v}')\n"
    good = make_script("kubectl-1.29", body.format(v="1.29.3"))
    table = PinTable([Pin.versioned(os.fspath(good), version_args=("version", "--client"))])
    assert await table.verify(os.fspath(good), path=DEFAULT_PATH) == os.fspath(good)

    bad = make_script("kubectl-1.28", body.format(v="1.30.1"))
    table = PinTable([Pin.versioned(os.fspath(bad), version_args=("version", "--client"))])
    with pytest.raises(PinMismatch, match=r"1\.28.*1\.30\.1"):
        await table.verify(os.fspath(bad), path=DEFAULT_PATH)

    with pytest.raises(PolicyInvalid, match="no version in its name"):
        Pin.versioned("kubectl")


async def test_the_version_report_runs_once_per_process(make_script: MakeScript, tmp_path: Path) -> None:
    counter = tmp_path / "reports"
    tool = make_script("counted", "", version="2.5.1")
    tool.write_text(
        tool.read_text().replace(
            "if sys.argv[1:] == ['--version']:\n",
            f"if sys.argv[1:] == ['--version']:\n    open({os.fspath(counter)!r}, 'a').write('x')\n",
        )
    )
    table = pinned(tool, version="2.5")
    for _ in range(3):
        await table.verify(os.fspath(tool), path=DEFAULT_PATH)
    assert counter.read_text() == "x"
    os.utime(tool, ns=(0, 1))  # a replaced binary is asked again
    await table.verify(os.fspath(tool), path=DEFAULT_PATH)
    assert counter.read_text() == "xx"


async def test_unpinned_unknown_and_missing_programs() -> None:
    with pytest.raises(UnpinnedBinary):
        await PinTable().verify("ls", path=DEFAULT_PATH)
    with pytest.raises(BinaryNotFound, match="not an executable file"):
        await PinTable([Pin(binary="no-such-tool-xyz", version="1.0")]).verify(
            "no-such-tool-xyz", path=DEFAULT_PATH
        )
    with pytest.raises(BinaryNotFound):
        await PinTable([Pin(binary="/nonexistent/tool", version="1.0")]).verify(
            "/nonexistent/tool", path=DEFAULT_PATH
        )


async def test_a_report_without_a_version_is_a_mismatch(make_script: MakeScript) -> None:
    tool = make_script("quiet", "", version="none")
    with pytest.raises(PinMismatch, match="unknown"):
        await pinned(tool).verify(os.fspath(tool), path=DEFAULT_PATH)


async def test_a_shell_under_another_name_is_never_run(tmp_path: Path) -> None:
    alias = tmp_path / "mytool"
    alias.symlink_to("/bin/bash")
    with pytest.raises(ForbiddenBinary, match="resolves to"):
        await PinTable([Pin(binary=os.fspath(alias), version="5.2")]).verify(
            os.fspath(alias), path=DEFAULT_PATH
        )


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ([Pin(binary="bash", version="5.2")], "can never be pinned"),
        ([Pin(binary="/usr/bin/python3", version="3.11")], "can never be pinned"),
        ([Pin(binary="bin/tool", version="1")], "bare name or an absolute path"),
        ([Pin(binary="ls", version="9.1"), Pin(binary="ls", version="9.2")], "pinned twice"),
    ],
)
def test_pin_tables_refuse_what_cannot_be_honoured(pins: list[Pin], message: str) -> None:
    with pytest.raises(PolicyInvalid, match=message):
        PinTable(pins)


def test_with_pins_and_from_versions() -> None:
    table = PinTable.from_versions({"curl": "7.88.1", "psql": "15"})
    assert "curl" in table and len(table) == 2
    replaced = table.with_pins(Pin(binary="curl", version="8.0"))
    assert [pin.version for pin in replaced if pin.binary == "curl"] == ["8.0"]
    assert repr(table) == "PinTable(['curl', 'psql'])"
