"""The guard policy: what may follow a pipe, whether the TLS fallback is allowed, output bounds."""

from __future__ import annotations

import msgspec

from services.guard.errors import PolicyInvalid
from services.guard.filters import BUILTIN_FILTERS, FilterSpec
from services.guard.pins import is_forbidden

DEFAULT_PIPE_ALLOW_LIST: tuple[str, ...] = ("grep", "jq", "wc", "head", "tail", "cut", "sort", "uniq")
"""The spec's pipe allow-list, exactly."""


class GuardPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Per-tenant guard settings.

    ``pipe_allow_list`` names the programs allowed after ``|``; each needs option rules, built in
    for the spec's eight or given in ``filters`` (which may also replace a built-in's rules).
    ``allow_tls_fallback`` allows the one insecure retry after a certificate error; it is off
    by default (the safe default), and the spec's behaviour is this flag set to True.
    ``max_output_bytes`` bounds stored stdout and stderr each; ``stderr_tail_bytes`` bounds the
    stderr kept per attempt record.
    """

    pipe_allow_list: tuple[str, ...] = DEFAULT_PIPE_ALLOW_LIST
    filters: tuple[FilterSpec, ...] = ()
    allow_tls_fallback: bool = False
    max_output_bytes: int = 64 * 1024
    stderr_tail_bytes: int = 512

    def __post_init__(self) -> None:
        for name in self.pipe_allow_list:
            if not name or "/" in name:
                raise PolicyInvalid(
                    f"pipe allow-list entry {name!r} must be a bare program name (found on the step's PATH)."
                )
            if is_forbidden(name):
                raise PolicyInvalid(
                    f"pipe allow-list entry {name!r} is a shell, interpreter or program runner; "
                    "it can never follow a pipe."
                )
            if self.filter_spec(name) is None:
                raise PolicyInvalid(
                    f"pipe allow-list entry {name!r} has no option rules; add a FilterSpec for it to "
                    "GuardPolicy.filters, so that its options cannot write files, read files or run programs."
                )
        if self.max_output_bytes < 1 or self.stderr_tail_bytes < 0:
            raise PolicyInvalid("max_output_bytes must be positive and stderr_tail_bytes not negative.")

    def filter_spec(self, name: str) -> FilterSpec | None:
        """The option rules for filter ``name``: the policy's own first, then the built-in ones."""
        for spec in self.filters:
            if spec.name == name:
                return spec
        return BUILTIN_FILTERS.get(name)


DEFAULT_POLICY = GuardPolicy()
"""The spec's allow-list, no TLS fallback, 64 KiB of output per stream."""
