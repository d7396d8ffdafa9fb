"""The resource catalog: every provider's resource types, their pinned CLIs, and read-back parsing.

``CATALOG`` maps a type name (``az_aks``, ``local_directory``…) to its :class:`ResourceType`;
``PINS`` maps a CLI name (``Step.cli``) to its :class:`CliPin`. The executor and verifier use
:func:`observe` to judge a read-back (:class:`Present` / :class:`Absent` / :class:`Unknown`, see
:mod:`providers.readback`) and :func:`compare` to diff what was found against ``Step.desired``.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.plan import ResourceRef
from providers import aws, azure, k8s, local, postgres
from providers.base import CliPin, FieldSpec, Mismatch, Requirement, ResourceType, compare, display
from providers.readback import Absent, Known, Observed, Present, Unknown

__all__ = [
    "CATALOG",
    "PINS",
    "PROVIDERS",
    "TARGET_RULES",
    "Absent",
    "CliPin",
    "FieldSpec",
    "Known",
    "Mismatch",
    "Observed",
    "Present",
    "Requirement",
    "ResourceType",
    "Unknown",
    "compare",
    "display",
    "facets_of",
    "lookup",
    "observe",
    "pin_for",
]

PROVIDERS: tuple[str, ...] = ("local", "aws", "postgres", "azure", "k8s")
CATALOG: Mapping[str, ResourceType] = {
    t.name: t for module in (local, aws, postgres, azure, k8s) for t in module.TYPES
}
PINS: Mapping[str, CliPin] = {p.name: p for p in (local.PIN, local.HELPER, aws.PIN, postgres.PIN, azure.PIN, k8s.PIN)}
_WORD = (r"[A-Za-z0-9][\w.@:-]{0,62}", "letters, digits and . @ : _ - (a context or server name)")
TARGET_RULES: Mapping[str, tuple[str, str]] = {
    "local": ("local", "always 'local'"),
    "aws": (aws.REGION_PATTERN, "an AWS region like us-east-1"),
    "postgres": _WORD,
    "azure": _WORD,
    "k8s": _WORD,
}


def lookup(type_name: str) -> ResourceType | None:
    """The resource type called ``type_name``, or ``None``."""
    return CATALOG.get(type_name)


def pin_for(type_name: str) -> CliPin:
    """The pinned CLI that runs ``type_name``'s commands."""
    return PINS[CATALOG[type_name].cli]


_FACETS: Mapping[str, tuple[ResourceType, ...]] = {
    name: tuple(t for t in CATALOG.values() if name in t.facet_of) for name in CATALOG
}


def facets_of(type_name: str) -> tuple[ResourceType, ...]:
    """The facet types of ``type_name`` in catalog order."""
    return _FACETS.get(type_name, ())


def observe(ref: ResourceRef, rc: int, stdout: str, stderr: str = "", *, timed_out: bool = False) -> Observed:
    """What ``ref``'s read-back (its exit status and output) says: present with its fields (and
    ``exists: True``), absent (proven by its type's rule), or unknown (with the reason)."""
    rtype = CATALOG.get(ref.type)
    if rtype is None:
        raise KeyError(f"unknown resource type {ref.type!r}; known: {', '.join(sorted(CATALOG))}")
    return rtype.read(rc, stdout, stderr, ref.name, timed_out=timed_out)
