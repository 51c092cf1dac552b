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
