"""`PromptText`: a Gymnasium ``Text`` space that survives ``AsyncVectorEnv`` shared memory.

Gymnasium (checked on 1.4.0) builds the batched observation of an ``AsyncVectorEnv`` once,
by reading its shared memory at construction; for ``Box`` that read is a live numpy view,
but for ``Text`` it is a tuple of strings frozen at that moment, so every prompt later comes
back as padding. ``PromptText`` registers a reader that returns a live view instead: it
decodes the current buffer on access, and ``deepcopy`` (what the vector env hands to the
user) materializes it to a plain tuple of strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory

__all__ = ["PromptText"]


class PromptText(spaces.Text):
    """A ``Text`` space whose batched shared-memory observations stay live."""


class _LiveTextBatch(Sequence):
    """The strings currently in a vector env's shared buffer, decoded on access."""

    def __init__(self, space: PromptText, shared_memory: Any, n: int) -> None:
        self._space, self._memory, self._n = space, shared_memory, n

    def _row(self, i: int) -> str:
        size = self._space.max_length
        data = np.frombuffer(self._memory.get_obj(), dtype=np.int32)[i * size : (i + 1) * size]
        chars, limit = self._space.character_list, len(self._space.character_set)
        return "".join(chars[v] for v in data if v < limit)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return tuple(self._row(j) for j in range(self._n)[i])
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._row(i % self._n)

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(tuple(self))


@read_from_shared_memory.register(PromptText)
def _read_prompt_text(space: PromptText, shared_memory: Any, n: int = 1) -> _LiveTextBatch:
    return _LiveTextBatch(space, shared_memory, n)
