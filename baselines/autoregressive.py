"""Deprecated location: ``ARPolicy`` moved to :mod:`agents.autoregressive.policy` (an agent backbone).

``from baselines.autoregressive import ARPolicy`` keeps working and warns once per process.
"""

from __future__ import annotations

import warnings

from agents.autoregressive.policy import FORMAT, TINY_CONFIG, ARPolicy

__all__ = ["FORMAT", "TINY_CONFIG", "ARPolicy"]

warnings.warn(
    "baselines.autoregressive is deprecated; import ARPolicy from agents.autoregressive",
    DeprecationWarning,
    stacklevel=2,
)
