"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import tempfile

# Remote-code test models (tests/tiny_dllm.py, tests/tiny_hf.py) are copied by transformers into its
# modules cache; a per-session folder keeps concurrent or stale copies of one name from colliding.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="lavida-hf-modules-"))

import pytest  # noqa: E402

from task_envs import first_observations


@pytest.fixture(scope="module")
def observations() -> list[dict]:
    """The first test observation of each task env (``task_envs.ENVS``), for the policy tests."""
    return first_observations()


@pytest.fixture(autouse=True)
def _forget_foreign_remote_code_modules():
    """After a test, drop imported ``transformers_modules`` packages that live outside the current modules cache.

    A test that points transformers at its own modules folder (monkeypatching
    ``dynamic_module_utils.HF_MODULES_CACHE``) leaves ``transformers_modules`` imported from that
    folder; later remote-code loads would then look for their files there and fail.
    """
    yield
    import sys

    dmu = sys.modules.get("transformers.dynamic_module_utils")
    if dmu is None:
        return
    root = os.path.realpath(str(dmu.HF_MODULES_CACHE))
    for name in [m for m in sys.modules if m == "transformers_modules" or m.startswith("transformers_modules.")]:
        paths = list(getattr(sys.modules[name], "__path__", []) or []) or [getattr(sys.modules[name], "__file__", "") or ""]
        if not any(os.path.realpath(p).startswith(root) for p in paths if p):
            del sys.modules[name]
