"""Shared set-up.

- The verification tools (the MSL emulator) live in `emulators/`, outside the runtime package:
  the tests import them from the clone.
- Every test starts with the front end's per-signature caches empty, so that a test which swaps
  a backend's availability (monkeypatch) never sees a decision cached by another.
"""
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
