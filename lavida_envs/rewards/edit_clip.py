"""CLIP-based edit scores from a local ``transformers`` CLIP checkpoint (no downloads).

``CLIPScorer(path)`` loads ``CLIPModel``, a tokenizer (``AutoTokenizer``) and a
``CLIPImageProcessor`` from a local directory with ``local_files_only=True``. Embeddings
are L2-normalised, so every score is a cosine in [-1, 1]:

* ``clip_i(output, target)``  = cos(E_img(output), E_img(target))          (CLIP-I)
* ``clip_t(output, text)``    = cos(E_img(output), E_txt(text))            (CLIP-T)
* ``directional(source, output, source_text, target_text)``
  = cos(E_img(output) - E_img(source), E_txt(target_text) - E_txt(source_text)),
  the InstructPix2Pix "CLIP directional similarity" (needs captions of both images);
* ``image_directional(source, output, target)``
  = cos(E_img(output) - E_img(source), E_img(target) - E_img(source)), the same idea
  when the target image is known instead of captions.

A zero direction (e.g. the output *is* the source) gives a directional score of 0.
torch and transformers are imported only when a scorer is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["CLIPScorer", "cosine"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; 0 when either is (numerically) zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-8 or nb < 1e-8:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def _pooled(output: Any) -> Any:
    """Projected features from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class CLIPScorer:
    """CLIP-I, CLIP-T and directional similarity with a CLIP model from a local directory."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32) -> None:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(
                f"CLIP model directory {str(path)!r} does not exist; pass a local directory holding a "
                "transformers CLIP checkpoint (config.json, weights, tokenizer and preprocessor files, "
                "e.g. from save_pretrained); nothing is downloaded"
            )
        if not (root / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(root / 'config.json')!r} not found: {str(path)!r} is not a saved transformers model "
                "directory (run model.save_pretrained(DIR), tokenizer.save_pretrained(DIR) and "
                "image_processor.save_pretrained(DIR))"
            )
        import torch
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self._torch = torch
        self.path = str(root)
        self.device = device
        self.batch_size = int(batch_size)
        self.model = CLIPModel.from_pretrained(self.path, local_files_only=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.image_processor = CLIPImageProcessor.from_pretrained(self.path, local_files_only=True)
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)

    # ----- embeddings ---------------------------------------------------------------
    def image_embeddings(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised image embeddings, float32 (N, D), for uint8 (H, W, 3) images."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(img, dtype=np.uint8) for img in images[start : start + self.batch_size]]
            inputs = self.image_processor(images=batch, return_tensors="pt")
            with self._torch.no_grad():
                feats = _pooled(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device)))
            chunks.append(feats.float().cpu().numpy())
        return self._normalise(np.concatenate(chunks, axis=0))

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 (N, D) (texts truncated to the model's length)."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = [str(t) for t in texts[start : start + self.batch_size]]
            inputs = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
            )
            with self._torch.no_grad():
                feats = _pooled(
                    self.model.get_text_features(
                        input_ids=inputs["input_ids"].to(self.device),
                        attention_mask=inputs["attention_mask"].to(self.device),
                    )
                )
            chunks.append(feats.float().cpu().numpy())
        return self._normalise(np.concatenate(chunks, axis=0))

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32)

    # ----- scores -------------------------------------------------------------------
    def clip_i(self, output: np.ndarray, target: np.ndarray) -> float:
        """CLIP-I: cosine of the output and target image embeddings."""
        emb = self.image_embeddings([output, target])
        return cosine(emb[0], emb[1])

    def clip_t(self, output: np.ndarray, text: str) -> float:
        """CLIP-T: cosine of the output image and ``text`` embeddings."""
        return cosine(self.image_embeddings([output])[0], self.text_embeddings([text])[0])

    def directional(self, source: np.ndarray, output: np.ndarray, source_text: str, target_text: str) -> float:
        """InstructPix2Pix directional similarity: image change vs caption change."""
        img = self.image_embeddings([source, output])
        txt = self.text_embeddings([source_text, target_text])
        return cosine(img[1] - img[0], txt[1] - txt[0])

    def image_directional(self, source: np.ndarray, output: np.ndarray, target: np.ndarray) -> float:
        """Directional similarity against the target image: cos(E(out) - E(src), E(tgt) - E(src))."""
        img = self.image_embeddings([source, output, target])
        return cosine(img[1] - img[0], img[2] - img[0])

    def scores(
        self,
        output: np.ndarray,
        source: np.ndarray,
        target: np.ndarray,
        instruction: str,
        source_text: str | None = None,
        target_text: str | None = None,
    ) -> dict[str, float]:
        """All scores for one edit with one batched forward per modality.

        Keys: ``clip_i``, ``clip_t`` (against ``instruction``), ``image_directional`` and,
        when both captions are given, ``directional``.
        """
        img = self.image_embeddings([source, output, target])
        texts = [instruction] + ([source_text, target_text] if source_text and target_text else [])
        txt = self.text_embeddings(texts)
        result = {
            "clip_i": cosine(img[1], img[2]),
            "clip_t": cosine(img[1], txt[0]),
            "image_directional": cosine(img[1] - img[0], img[2] - img[0]),
        }
        if len(txt) == 3:
            result["directional"] = cosine(img[1] - img[0], txt[2] - txt[1])
        return result
