"""Equal collectives per rank (docs/design.md, "Training"): forward counters and the step sync of sharded runs.

FSDP2 and ZeRO-3 gather parameters inside every forward, so all ranks must make the same number of
forwards in the same order or the run hangs. Three pieces keep them equal:

* :class:`ForwardCounter` -- counts forwards of a module per phase (``rollout``, ``likelihood``,
  ``reference``, ``eval``; :meth:`ForwardCounter.phase` sets the current one), so a test can compare
  ranks; the trainer exposes it as ``Trainer.forwards``;
* :func:`synced` / :func:`active_sync` -- while the trainer runs a multi-process step, decoding loops
  call :meth:`StepSync.pad` once per denoising step: it all-reduces (max) this rank's model calls and
  whether it still has work, so a rank that finished (threshold decoding) or made fewer calls (KV
  cache refreshes) makes dummy forwards until every rank is done (transformers' ``synced_gpus``);
* :func:`pad_shares` -- equal-length shares of a list over ranks (the padding marked, so results of
  padded items are dropped).

This module imports nothing from the project (a leaf: the sampler and the trainer both use it).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TypeVar

import torch

__all__ = ["ForwardCounter", "StepSync", "active_sync", "pad_shares", "synced"]

T = TypeVar("T")


class ForwardCounter:
    """Forwards of a module (and its hooked children) per phase; ``counts`` is a ``Counter`` of phase -> calls."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.current = "other"
        self._handles: list[Any] = []

    def attach(self, module: torch.nn.Module) -> "ForwardCounter":
        """Count every forward of ``module`` (a forward pre-hook; works through FSDP/DDP wrappers)."""
        self._handles.append(module.register_forward_pre_hook(lambda *_: self._tick()))
        return self

    def _tick(self) -> None:
        self.counts[self.current] += 1

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count forwards inside the block under ``name``."""
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def as_dict(self) -> dict[str, int]:
        """``{phase: calls}`` sorted by phase."""
        return dict(sorted(self.counts.items()))


class StepSync:
    """One all-reduce per denoising step across the ranks of the default process group."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def pad(self, calls: int, working: bool) -> tuple[int, bool]:
        """``(dummy calls this rank must make, whether any rank still works)`` after this rank's step."""
        import torch.distributed as dist

        flags = torch.tensor([int(calls), int(working)], dtype=torch.long, device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return int(flags[0]) - int(calls), bool(flags[1])


_ACTIVE: list[StepSync] = []


def active_sync() -> StepSync | None:
    """The :class:`StepSync` of the running multi-process step, or None (one process, or outside the trainer)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def synced(world_size: int, device: torch.device | str = "cpu") -> Iterator[StepSync | None]:
    """Inside the block decoding loops keep ranks in step (nothing happens with one process)."""
    if world_size <= 1:
        yield None
        return
    sync = StepSync(device)
    _ACTIVE.append(sync)
    try:
        yield sync
    finally:
        _ACTIVE.remove(sync)


def pad_shares(items: Sequence[T], rank: int, world: int) -> list[tuple[T, bool]]:
    """Rank ``rank``'s share ``items[rank::world]`` as ``(item, real)`` pairs, padded with copies of the first item
    (``real`` False) to ``ceil(len / world)``, so every rank handles the same number of items."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    share = [(item, True) for item in items[rank::world]]
    length = -(-len(items) // world)
    filler = items[0] if items else None
    return share + [(filler, False)] * (length - len(share))  # type: ignore[list-item]
