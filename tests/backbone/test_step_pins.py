"""Every CLI the local provider runs passes its pin against this machine's own version report."""

from __future__ import annotations

import pytest

from providers import PINS
from services.guard import DEFAULT_PATH
from services.guard.steps import pin_table


@pytest.mark.parametrize("binary", PINS["coreutils"].binaries)
async def test_each_local_binary_satisfies_its_pin(binary: str) -> None:
    resolved = await pin_table().verify(binary, path=DEFAULT_PATH)
    assert resolved.endswith("/" + binary)
