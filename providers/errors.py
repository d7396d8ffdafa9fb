"""Errors raised while validating a resource's fields against its type's schema.

::

    ProviderError            a resource's fields do not fit its type
    ├── UnknownField         a field the type does not have (lists the ones it has)
    ├── MissingField         a required field is absent (says how to give it)
    └── InvalidValue         a value breaks the field's rule (names the rule)

Each carries ``type_name``, ``field`` and a ``message`` saying what to change.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A resource's fields do not fit its type's schema."""

    def __init__(self, type_name: str, field: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.field = field
        self.message = message


class UnknownField(ProviderError):
    """The resource names a field its type does not have."""


class MissingField(ProviderError):
    """A required field has no value."""


class InvalidValue(ProviderError):
    """A value breaks its field's rule (naming rules, choices, number ranges)."""
