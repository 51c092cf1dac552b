"""Custom Gymnasium spaces: `PromptText` (observations) and `TextOrEditAction` (MultiTask actions).

`TextOrEditAction` is described in its class docstring. `PromptText` is a ``Text`` space that
survives ``AsyncVectorEnv`` shared memory:

Gymnasium (checked on 1.4.0) builds the batched observation of an ``AsyncVectorEnv`` once,
by reading its shared memory at construction; for ``Box`` that read is a live numpy view,
but for ``Text`` it is a tuple of strings frozen at that moment, so every prompt later comes
back as padding. ``PromptText`` registers a reader that returns a live view instead: it
decodes the current buffer on access, and ``deepcopy`` (what the vector env hands to the
user) materializes it to a plain tuple of strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, iterate, read_from_shared_memory

__all__ = ["PromptText", "TextOrEditAction"]


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


class TextOrEditAction(spaces.Dict):
    """``Dict(text=Text, image=Box)`` that also contains a plain text action (``str``).

    The action space of a task mixture with both text tasks and image edit: an edit episode
    takes ``{"text": str, "image": uint8[S, S, 3]}``, a text episode a ``str`` (or that dict,
    whose ``text`` it reads). ``contains`` accepts both forms; ``sample`` draws the dict form.
    In a vector env the batched space takes a list (or tuple) with one action of either form
    per env, or the dict-of-batches form ``{"text": [...], "image": uint8[N, S, S, 3]}``.
    """

    def __init__(self, text: spaces.Text, image: spaces.Box, seed: Any = None) -> None:
        super().__init__({"text": text, "image": image}, seed=seed)

    @property
    def text_space(self) -> spaces.Text:
        """The text part (what a text-only action must lie in)."""
        return self.spaces["text"]

    def contains(self, x: Any) -> bool:
        """True for a ``str`` in the text space or a ``{"text", "image"}`` dict in the Dict space."""
        if isinstance(x, str):
            return self.text_space.contains(x)
        return super().contains(x)

    def __repr__(self) -> str:
        return f"TextOrEditAction(text={self.spaces['text']!r}, image={self.spaces['image']!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextOrEditAction) and super().__eq__(other)


class _ActionBatch(spaces.Tuple):
    """The batched :class:`TextOrEditAction` of a vector env: one action (str or dict) per env."""

    def contains(self, x: Any) -> bool:
        """A list/tuple with one contained action per env, or the dict-of-batches form."""
        if isinstance(x, Mapping):
            return all(space.contains(a) for space, a in zip(self.spaces, _split_batch(x, len(self.spaces))))
        return super().contains(x)


def _split_batch(items: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """``{"text": [t0, ...], "image": [i0, ...]}`` -> ``[{"text": t0, "image": i0}, ...]``."""
    columns = {key: list(value) for key, value in items.items()}
    bad = {key: len(value) for key, value in columns.items() if len(value) != n}
    if bad:
        raise ValueError(f"batched action {sorted(columns)} needs {n} entries per key, got lengths {bad}")
    return [{key: value[i] for key, value in columns.items()} for i in range(n)]


@batch_space.register(TextOrEditAction)
def _batch_text_or_edit(space: TextOrEditAction, n: int = 1) -> _ActionBatch:
    seeds = space.np_random.integers(0, 2**31 - 1, size=n)
    copies = []
    for i in range(n):
        copy = deepcopy(space)
        copy.seed(int(seeds[i]))
        copies.append(copy)
    return _ActionBatch(tuple(copies))


@iterate.register(_ActionBatch)
def _iterate_action_batch(space: _ActionBatch, items: Any) -> Iterator[Any]:
    if isinstance(items, Mapping):
        return iter(_split_batch(items, len(space.spaces)))
    if isinstance(items, (str, bytes)) or not isinstance(items, (Sequence, np.ndarray)):
        raise TypeError(
            f"a vector env of {space.spaces[0]!r} takes one action per env (a list of str or "
            f"{{'text', 'image'}} dicts), got {type(items).__name__}"
        )
    return iter(items)
