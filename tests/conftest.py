"""Shared set-up.

- The verification tools (the MSL emulator) live in `emulators/`, outside the runtime package:
  the tests import them from the clone.
- Every test starts with the front end's per-signature caches empty, so that a test which swaps
  a backend's availability (monkeypatch) never sees a decision cached by another.
- Tests marked `slow` (the emulators' longer matrices) run only with MLX_ATTN_SLOW_TESTS=1: CI's
  30-minute budget on 2 cores runs the rest; a machine with time (or a GPU check) runs them too.
"""
import os
import pathlib
import sys

import pytest

EMULATORS = pathlib.Path(__file__).resolve().parents[1] / "emulators"
if str(EMULATORS) not in sys.path:
    sys.path.insert(0, str(EMULATORS))


@pytest.fixture(autouse=True)
def _fresh_dispatch_caches():
    from mlx_attn import dispatch, validate
    dispatch.clear_cache()
    validate.clear_cache()
    yield


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MLX_ATTN_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set MLX_ATTN_SLOW_TESTS=1 to run the longer matrices")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
