"""The provider catalog: local commands run for real with coreutils, read-back parsing, pins."""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import anyio
import pytest

from events.plan import Command, ResourceRef, Step
from providers import (
    CATALOG,
    PINS,
    PROVIDERS,
    Absent,
    Mismatch,
    Present,
    Unknown,
    compare,
    display,
    observe,
    pin_for,
)
from services.guard.steps import read_back, step_path
from services.planner import CompileInput, compile_intent


def _run(cmd: Command, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # on the steps' PATH: the local writer (upm-localfs) is in this environment's scripts
        list(cmd.argv), input=stdin or "", capture_output=True, text=True, timeout=10, check=False,
        env={**os.environ, "PATH": step_path()},
    )


def _observed(step: Step) -> dict[str, object] | None:
    """What the verifier sees: the step's read-back, then its type's supplement (a file's digest)."""
    seen = anyio.run(read_back, step.resource, step.readback)
    assert not isinstance(seen, Unknown), seen
    return seen.fields


def _apply(step: Step) -> None:
    out = _run(step.command, step.stdin)
    assert out.returncode == 0, (step.command.display, out.stderr)
    assert compare(step.desired, _observed(step)) == []


def test_local_plan_runs_for_real_and_reads_back(tmp_path: Path) -> None:
    base = tmp_path / "app"
    user = getpass.getuser()
    request = (
        f"create directory {base} with mode 0750 owned by {user} and file {base}/app.conf containing 'line one' "
        f"with mode 0640, and symlink {tmp_path}/current pointing to {base}"
    )
    plan = compile_intent(CompileInput(request=request))
    assert plan.resources_needed[0].resource.key == f"local_directory:local:{tmp_path}"
    assert _run(plan.resources_needed[0].check).returncode == 0
    for step in plan.steps:
        if step.guard is not None and step.resource.type != "local_owner":
            assert compare(step.desired, _observed(step)) != []
        _apply(step)
    assert (base / "app.conf").read_text() == "line one"
    assert oct((base / "app.conf").stat().st_mode & 0o777) == "0o640"
    assert oct(base.stat().st_mode & 0o777) == "0o750"
    assert (tmp_path / "current").readlink() == base
    for step in plan.steps:
        if step.guard is not None:
            assert compare(step.desired, _observed(step)) == [], f"guard should skip {step.id} on a re-run"
    for cmd in plan.rollback:
        assert _run(cmd).returncode == 0, cmd.display
    assert not base.exists() and not (tmp_path / "current").is_symlink()


def test_local_updates_and_deletes_run_for_real(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir(mode=0o755)
    (target / "f").write_text("old")
    spec = {
        "resources": [
            {"type": "local_directory", "path": str(target), "mode": "0700", "action": "update"},
            {"type": "local_file", "path": f"{target}/f", "content": "new\ncontent\n", "action": "update"},
        ]
    }
    plan = compile_intent(CompileInput(spec=spec))
    assert [s.command.display for s in plan.steps] == [
        f"upm-localfs write {target}/f",
        f"upm-localfs chmod 0700 {target}",
    ]
    assert {p.resource.key for p in plan.resources_needed} == {
        f"local_directory:local:{target}",
        f"local_file:local:{target}/f",
    }
    for step in plan.steps:
        _apply(step)
    assert (target / "f").read_text() == "new\ncontent\n"
    delete = compile_intent(CompileInput(request=f"delete file {target}/f and directory {target}"))
    assert [s.command.display for s in delete.steps] == [f"upm-localfs rm -f {target}/f", f"upm-localfs rmdir {target}"]
    for step in delete.steps:
        _apply(step)
    assert not target.exists()
    assert [c.display for c in delete.rollback] == [f"upm-localfs mkdir -m 0755 {target}"]


def test_observe_parses_each_providers_read_back() -> None:
    def ref(type_name: str, name: str) -> ResourceRef:
        return ResourceRef(
            provider=CATALOG[type_name].provider, type=type_name, name=name, target="t", key="k"
        )

    assert observe(ref("local_directory", "/x"), 0, "directory:750:root\n") == Present({
        "exists": True,
        "kind": "directory",
        "mode": "0750",
        "owner": "root",
    })
    assert observe(ref("local_file", "/x"), 0, "regular empty file:644:root:0\n") == Present({
        "exists": True,
        "kind": "regular file",
        "mode": "0644",
        "owner": "root",
        "size": 0,
    })
    gone = "stat: cannot statx '/x': No such file or directory\n"
    assert observe(ref("local_directory", "/x"), 1, "", gone) == Absent("No such file or directory")
    assert observe(ref("aws_s3_bucket_versioning", "b"), 0, '{"Status": "Enabled"}') == Present({
        "exists": True,
        "versioning": True,
    })
    tags = '{"TagSet": [{"Key": "team", "Value": "alpha"}]}'
    assert observe(ref("aws_s3_bucket_tagging", "b"), 0, tags) == Present({"exists": True, "tags": {"team": "alpha"}})
    attached = '{"AttachedPolicies": [{"PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]}'
    assert observe(
        ref("aws_iam_role_policy_attachment", "r:arn:aws:iam::aws:policy/ReadOnlyAccess"), 0, attached
    ) == Present({"exists": True})
    assert isinstance(observe(ref("aws_iam_role_policy_attachment", "r:arn:aws:iam::aws:policy/Other"), 0, attached),
                      Absent)
    role = {
        "Role": {"AssumeRolePolicyDocument": {"Statement": [{"Principal": {"Service": "ec2.amazonaws.com"}}]}}
    }
    assert observe(ref("aws_iam_role", "r"), 0, json.dumps(role)) == Present({
        "exists": True,
        "service": "ec2.amazonaws.com",
    })
    assert observe(ref("aws_sqs_queue", "q"), 0, '{"Attributes": {"VisibilityTimeout": "30"}}') == Present({
        "exists": True,
        "visibility_timeout": 30,
    })
    assert observe(ref("pg_role", "analyst"), 0, "analyst|t\n") == Present({
        "exists": True,
        "name": "analyst",
        "login": True,
    })
    assert isinstance(observe(ref("pg_role", "analyst"), 0, ""), Absent)
    assert observe(ref("pg_grant", "g"), 0, "t\n") == Present({"exists": True})
    assert isinstance(observe(ref("pg_grant", "g"), 0, "f\n"), Absent)
    assert observe(
        ref("az_aks", "a"), 0, '{"agentPoolProfiles": [{"count": 2}], "provisioningState": "Succeeded"}'
    ) == Present({"exists": True, "node_count": 2, "state": "Succeeded"})
    deploy = {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "nginx:1.27"}]}}}}
    assert observe(ref("k8s_deployment", "ns/web"), 0, json.dumps(deploy)) == Present({
        "exists": True,
        "image": "nginx:1.27",
        "replicas": 3,
    })
    missing = 'Error from server (NotFound): namespaces "x" not found\n'
    assert observe(ref("k8s_namespace", "x"), 1, "", missing) == Absent("Error from server (NotFound)")
    with pytest.raises(KeyError, match="unknown resource type"):
        observe(
            ref("local_directory", "x").__class__(provider="x", type="nope", name="x", target="t", key="k"),
            0,
            "",
        )


def test_compare_semantics() -> None:
    assert compare({"exists": True, "mode": "0750"}, {"mode": "0750", "owner": "x"}) == []
    assert compare({"exists": True, "mode": "0750"}, {"mode": "0700"}) == [
        Mismatch(field="mode", desired="0750", observed="0700")
    ]
    assert compare({"exists": True, "mode": "0750"}, None) == [
        Mismatch(field="exists", desired=True, observed=False)
    ]
    assert compare({"exists": False}, None) == []
    assert compare({"exists": False}, {"mode": "0750"}) == [
        Mismatch(field="exists", desired=False, observed=True)
    ]


def test_every_type_has_a_pinned_cli_and_providers_are_complete() -> None:
    assert {t.provider for t in CATALOG.values()} == set(PROVIDERS)
    for rtype in CATALOG.values():
        pin = pin_for(rtype.name)
        assert pin.version
        assert rtype.readback[0] in pin.binaries or rtype.readback[0] == pin.name
    assert PINS["kubectl-1.29"].binaries == ("kubectl-1.29",)
    assert PINS["psql"].version == "15"
    version = subprocess.run(
        list(PINS["coreutils"].version_argv), capture_output=True, text=True, check=True
    ).stdout
    match = re.search(PINS["coreutils"].version_pattern, version)
    assert match is not None and match.group(1) == PINS["coreutils"].version


@pytest.mark.parametrize(
    "argv",
    [
        ("az", "aks", "create", "--ssh-key-value", "ssh-rsa AAAA..."),
        ("psql", "-c", "SELECT 'x' FROM t"),
        ("kubectl", "-p", '{"a":"b c"}'),
        ("echo", "it's", "", "a$b"),
        ("stat", "-c", "%F:%a:%U", "/tmp/x y"),
    ],
)
def test_display_round_trips_through_posix_splitting(argv: tuple[str, ...]) -> None:
    assert shlex.split(display(argv)) == list(argv)


def test_display_uses_double_quotes_like_the_spec() -> None:
    assert display(("a", "ssh-rsa AAAA...")) == 'a "ssh-rsa AAAA..."'


def test_every_template_of_the_catalog_compiles() -> None:
    from providers.base import render

    for rtype in CATALOG.values():
        templates = (
            rtype.create,
            rtype.update,
            rtype.delete,
            rtype.readback,
            rtype.health,
            rtype.exists,
            rtype.undo,
        )
        for template in templates:
            if template is not None:
                assert render(template, {}) is None  # every template names a variable; none is malformed


def test_templates_refuse_literal_braces() -> None:
    from providers.base import render

    with pytest.raises(ValueError, match="literal braces"):
        render(("x={a}{",), {"a": "1"})
