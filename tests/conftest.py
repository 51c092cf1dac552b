"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from task_envs import first_observations


@pytest.fixture(scope="module")
def observations() -> list[dict]:
    """The first test observation of each task env (``task_envs.ENVS``), for the policy tests."""
    return first_observations()
