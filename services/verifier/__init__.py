"""The verifier: proves the intended state after execution and after rollback, plans
rollbacks, and reconciles drift continuously.

``spec()`` is the pipeline service (see :mod:`services.verifier.service`); ``DriftLoop`` the
continuous drift reconciliation (see :mod:`services.verifier.drift`). Details in README.md.
"""

from __future__ import annotations

from services.verifier.service import NAME, spec

__all__ = ["NAME", "spec"]
