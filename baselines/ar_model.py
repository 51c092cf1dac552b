"""Deprecated location: the AR network moved to :mod:`agents.autoregressive.model`.

``from baselines.ar_model import ARModel`` keeps working and warns once per process.
"""

from __future__ import annotations

import warnings

from agents.autoregressive.model import AllowedTokens, ARConfig, ARModel, GumbelSampling, positions

__all__ = ["ARConfig", "ARModel", "AllowedTokens", "GumbelSampling", "positions"]

warnings.warn(
    "baselines.ar_model is deprecated; import from agents.autoregressive.model", DeprecationWarning, stacklevel=2
)
