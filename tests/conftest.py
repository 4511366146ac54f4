"""Fixtures for every folder of the suite (the shared functions are in tests/helpers, see tests/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The helpers hold assertions (the output contracts, the failure checks): rewritten as in a test module, so that a
# failure shows its values. Registered before anything imports them.
pytest.register_assert_rewrite("helpers")

from helpers.paths import REAL_DATA  # noqa: E402


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent")
    return REAL_DATA

# Tiny tensors run fastest on one thread; a 2-thread pool stalls on them when the machine is busy (CI has 2 cores).
import torch  # noqa: E402

torch.set_num_threads(1)
