"""Shared fixtures: every test starts with the front end's per-signature caches empty, so that a
test which swaps a backend's availability (monkeypatch) never sees a decision cached by another."""
import pytest


@pytest.fixture(autouse=True)
def _fresh_dispatch_caches():
    from mlx_attn import dispatch, validate
    dispatch.clear_cache()
    validate.clear_cache()
    yield
