"""Where each tenant's local resources may be written: the scope of the ``local`` provider.

One definition, read by the planner (a plan is rejected), pre-flight (a change is refused) and
the executor (a step is refused again right before it runs). One YAML or JSON file, from
``UPM_SCOPE_CONFIG``; every key is optional::

    roots: [/srv/upm, /tmp]     # every tenant's roots (default: <data folder>/targets and the
                                # system temp directory)
    tenants:                    # a tenant's own roots, instead of ``roots``
      acme: [/srv/acme]

A local resource's path must lie strictly below one of its tenant's roots (never the root
itself), and so must what a symlink points to; roots are compared as written, and since no
component of a path may be a symbolic link (:mod:`upm_localfs` walks every one with
``O_NOFOLLOW``), the path written is where the write lands: give roots by their real path. Paths are also re-checked for the characters and
parts the planner refuses (:func:`providers.local.path_problem`), so a plan
that did not come from the planner gets no further.

Rules: ``path-scope`` (outside the roots), ``path-characters``, ``path-symlink`` (a component is a
link: :func:`symlink_refusal`, which reads the filesystem).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

import upm_localfs as localfs
from events.plan import Plan, Step
from providers.local import PROVIDER, SYMLINK, path_problem
from services.common.configfile import read_mapping
from services.common.errors import ConfigError
from services.common.settings import data_dir

ENV_VAR = "UPM_SCOPE_CONFIG"


class Scope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every tenant's roots (``roots``), or a tenant's own (``tenants``); ``source`` names the file."""

    roots: tuple[str, ...] = ()
    tenants: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    source: str = "the default scope"

    def __post_init__(self) -> None:
        for key, roots in (("roots", self.roots), *((f"tenants.{t}", r) for t, r in self.tenants.items())):
            bad = next((r for r in roots if r == "/" or path_problem(r) is not None), None)
            if bad is not None:
                raise ConfigError(
                    f"{self.source}: {key} holds {bad!r}: a root is an absolute path below / with no '.' or '..' "
                    f"part, no trailing / and no control, bidi or zero-width character")

    def roots_for(self, tenant: str) -> tuple[str, ...]:
        return self.tenants.get(tenant, self.roots)

    def refusal(self, tenant: str, path: str) -> str | None:
        """Why ``tenant`` may not write ``path`` (pure), or ``None``."""
        problem = path_problem(path)
        if problem is not None:
            return f"rule path-characters: {path!r}: {problem}"
        roots = self.roots_for(tenant)
        if any(path.startswith(root + "/") for root in roots):
            return None
        key = f"tenants.{tenant}" if tenant in self.tenants else f"roots (or tenants.{tenant})"
        return (f"rule path-scope: {path} is outside tenant {tenant}'s roots ({', '.join(roots) or 'none'}): "
                f"local resources are written only below them; add a root to {key} in {self.source} "
                f"({ENV_VAR})")

    def step_refusal(self, tenant: str, step: Step) -> str | None:
        """Why ``tenant``'s ``step`` may not run (pure): its local path is out of scope, or it makes a
        symlink pointing out of scope; ``None`` for other providers."""
        if step.resource.provider != PROVIDER:
            return None
        refused = self.refusal(tenant, step.resource.name)
        target = step.desired.get("target") if step.resource.type == SYMLINK.name else None
        if refused is not None or not isinstance(target, str):
            return refused
        outside = self.refusal(tenant, target)
        return None if outside is None else (
            f"{outside} (it is what symlink {step.resource.name} would point to: a link may point only below "
            "the tenant's roots, or writing through it later would land outside them)")

    def plan_refusals(self, tenant: str, plan: Plan) -> list[str]:
        """Every distinct refusal of the plan's steps."""
        return list(dict.fromkeys(r for r in (self.step_refusal(tenant, s) for s in plan.steps) if r is not None))


def symlink_refusal(step: Step) -> str | None:
    """Why ``step``'s local path cannot be written: a component of it is a symbolic link (reads
    the filesystem; the executor's writer refuses the same again as it writes)."""
    if step.resource.provider != PROVIDER:
        return None
    try:
        link = localfs.symlink_in(step.resource.name)
    except localfs.Refused as err:
        return f"rule path-characters: {err}"
    if link is None:
        return None
    return (f"rule path-symlink: {link} (in {step.resource.name}) is a symbolic link; UPM never writes through "
            "one: give the real path")


def default_roots(data: Path | None = None) -> tuple[str, ...]:
    """``<data folder>/targets`` and the system temp directory (by its real path)."""
    return str((data or data_dir()) / "targets"), os.path.realpath(tempfile.gettempdir())


def load_scope(path: str | Path | None = None, *, data: Path | None = None) -> Scope:
    """The scope at ``path``, else at ``$UPM_SCOPE_CONFIG``, else :func:`default_roots` (of the data
    folder ``data``, default :func:`~services.common.settings.data_dir`) for everyone."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return Scope(roots=default_roots(data))
    mapping = read_mapping(chosen, what="the scope configuration", error=ConfigError)
    return parse_scope(mapping, source=str(chosen), data_folder=data)


def parse_scope(data: dict[str, object], *, source: str, data_folder: Path | None = None) -> Scope:
    try:
        scope = msgspec.convert({**data, "source": source}, Scope)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}; the keys are roots and tenants (see README.md, Scope)") from None
    return scope if "roots" in data else msgspec.structs.replace(scope, roots=default_roots(data_folder))
