"""Prompt and response layout of the diffusion policy: observations <-> token tensors.

Contract:

* Prompt of one observation: ``num_patches`` ``<image>`` placeholders, then the prompt
  text's tokens. Batches are left-padded with ``<pad>`` (attention mask 0).
* Response of a text task: ``gen_length`` positions, ending in ``<eos>`` padding
  (SFT targets are ``solution`` + ``<eos>`` up to ``gen_length``).
* Response of an image task (``image_edit``): ``text_length`` text positions, then
  ``<boi>``, ``grid * grid`` image codes, ``<eoi>``. ``<boi>``/``<eoi>`` are forced.
* A forced text suffix (answer forcing) fills the last positions of the text part.
* Decoding: text = the text part without special tokens (``<eos>`` padding anywhere is
  dropped); an image task with a complete code span becomes ``{"text", "image"}``, the
  image decoded by the codec at the observation's size; otherwise the action is the text.
* :func:`task_of` routes an observation: its ``"task"`` key if present, else the first
  entry of :data:`TASK_MARKERS` whose marker occurs in the prompt, else ``"text"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from agents.diffusion.codec import ImageCodec
from agents.diffusion.tokenizer import SpecialIds

__all__ = ["IMAGE_TASKS", "TASK_MARKERS", "ResponseLayout", "decode_response", "image_tensor", "task_of"]

#: Tasks whose response ends in a generated image.
IMAGE_TASKS: frozenset[str] = frozenset({"image_edit"})
#: task -> prompt substrings that identify it (checked in order; lower-cased match).
TASK_MARKERS: dict[str, tuple[str, ...]] = {
    "image_edit": ("edited image", "edit the image", "<boi>"),
    "grounding": ("bounding box", "[x1, y1, x2, y2]"),
}


def task_of(observation: dict) -> str:
    """The task an observation belongs to (decides response layout and length)."""
    task = observation.get("task")
    if isinstance(task, str) and task:
        return task
    prompt = str(observation.get("prompt", "")).lower()
    for name, markers in TASK_MARKERS.items():
        if any(m.lower() in prompt for m in markers):
            return name
    return "text"


def image_tensor(image: Any, size: int) -> torch.Tensor:
    """A uint8 (H, W, 3) image as float (3, size, size) ``1 - img / 255`` (nearest resize if needed).

    Ink-positive: the white background is 0, so a blank patch embeds to the bias alone and
    patch embeddings carry content rather than a large constant (with ``img / 255`` the
    background term dominated and a tiny model learned to ignore the image).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"observation image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST))
    return 1.0 - torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)


@dataclass(frozen=True)
class ResponseLayout:
    """Where text and image codes go in one response of ``length`` positions."""

    text_length: int
    grid: int = 0  # 0: text-only response

    @property
    def length(self) -> int:
        """Total response positions."""
        return self.text_length + (self.grid * self.grid + 2 if self.grid else 0)

    def template(
        self, ids: SpecialIds, suffix_ids: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(forced_ids, forced_mask, code_mask)``, each (length,), for one response."""
        forced_ids = torch.full((self.length,), ids.mask, dtype=torch.long)
        forced = torch.zeros(self.length, dtype=torch.bool)
        codes = torch.zeros(self.length, dtype=torch.bool)
        if suffix_ids:
            if len(suffix_ids) > self.text_length:
                raise ValueError(
                    f"forced suffix of {len(suffix_ids)} tokens does not fit the {self.text_length} text positions"
                )
            end = self.text_length
            forced_ids[end - len(suffix_ids) : end] = torch.tensor(suffix_ids, dtype=torch.long)
            forced[end - len(suffix_ids) : end] = True
        if self.grid:
            t, n = self.text_length, self.grid * self.grid
            forced_ids[t], forced_ids[t + n + 1] = ids.boi, ids.eoi
            forced[t] = forced[t + n + 1] = True
            codes[t + 1 : t + 1 + n] = True
        return forced_ids, forced, codes

    def target(
        self, ids: SpecialIds, text_ids: list[int], codes: np.ndarray | None
    ) -> tuple[torch.Tensor, bool]:
        """Response ids (length,) for SFT: text + ``<eos>`` padding (+ image span); truncated?"""
        truncated = len(text_ids) > self.text_length
        text = list(text_ids[: self.text_length]) + [ids.eos] * max(0, self.text_length - len(text_ids))
        if self.grid:
            if codes is None or np.asarray(codes).shape != (self.grid, self.grid):
                raise ValueError(f"an image response needs target codes of shape {(self.grid, self.grid)}")
            span = (np.asarray(codes).reshape(-1).astype(np.int64) + ids.code_start).tolist()
            text = text + [ids.boi] + span + [ids.eoi]
        return torch.tensor(text, dtype=torch.long), truncated


def decode_response(
    response: torch.Tensor, layout: ResponseLayout, tokenizer, ids: SpecialIds, codec: ImageCodec, image_size: int
) -> tuple[str, Any]:
    """``(text, action)`` of one response (length,) laid out as ``layout``."""
    tokens = response.tolist()
    text = tokenizer.decode(tokens[: layout.text_length], skip_special_tokens=True)
    if not layout.grid:
        return text, text
    t, n = layout.text_length, layout.grid * layout.grid
    span = np.asarray(tokens[t + 1 : t + 1 + n], dtype=np.int64) - ids.code_start
    if span.size != n or span.min() < 0 or span.max() >= codec.codebook_size:
        return text, text  # incomplete image: a bare text action (scores 0 for the image)
    image = codec.decode(span.reshape(layout.grid, layout.grid), image_size)
    return text, {"text": text, "image": image}
