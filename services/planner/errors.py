"""Errors of the planner. Each names the condition and its ``message`` says what to change.

::

    PlanError                    nothing was compiled; .message says what to change
    ├── InputError               neither or both of request / spec, or a bad window
    │   └── SecretRefused        the request, reason or spec file holds a secret (never echoed)
    ├── SpecError                a spec file or spec document is unreadable or malformed
    ├── ConfigError              a planner configuration file is unreadable or malformed
    ├── UnknownResourceType      a resource type (or phrase) the catalog does not know
    ├── AmbiguousPhrase          a phrase that names several types (.candidates lists them)
    ├── UnrecognisedPhrase       words of a request the parser cannot place
    ├── MissingRequiredField     a required field has no value
    ├── InvalidFieldValue        a value breaks its field's rule
    │   └── InvalidName          a name breaks the target's naming rules (S3, DNS labels…)
    ├── UnsupportedAction        an action the type cannot do (e.g. update a resource group)
    ├── ConflictingActions       one resource asked for twice, differently
    ├── DependencyCycle          explicit dependencies that loop (.cycle lists the keys)
    └── VariantError             an unknown variant, or one that does not fit the change

A compile either returns a whole plan or raises one of these: nothing half-compiled escapes.
"""

from __future__ import annotations


class PlanError(Exception):
    """The request could not be compiled into a plan."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(PlanError):
    """The compile input itself is unusable."""


class SecretRefused(InputError):
    """The input holds what looks like a secret; the message names where and the kind, never the value."""


class SpecError(PlanError):
    """A spec file or spec document is unreadable or malformed."""


class ConfigError(PlanError):
    """A planner configuration file is unreadable or malformed."""


class UnknownResourceType(PlanError):
    """The request names a resource type the catalog does not have."""


class AmbiguousPhrase(PlanError):
    """A phrase matches several resource types."""

    def __init__(self, message: str, candidates: tuple[str, ...]) -> None:
        super().__init__(message)
        self.candidates = candidates


class UnrecognisedPhrase(PlanError):
    """Words of a natural-language request that the parser cannot place."""


class MissingRequiredField(PlanError):
    """A required field has no value."""


class InvalidFieldValue(PlanError):
    """A field value breaks its rule."""


class InvalidName(InvalidFieldValue):
    """A resource name breaks the naming rules of its target."""


class UnsupportedAction(PlanError):
    """The resource type cannot perform the requested action."""


class ConflictingActions(PlanError):
    """One resource is asked for twice with different actions or fields."""


class DependencyCycle(PlanError):
    """The dependencies between resources form a cycle."""

    def __init__(self, message: str, cycle: tuple[str, ...]) -> None:
        super().__init__(message)
        self.cycle = cycle


class VariantError(PlanError):
    """The rollout variant is unknown or does not fit the change."""
