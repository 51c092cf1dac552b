"""``HFVLMPolicy`` (spec ``hf-vlm:<dir>``): a local Hugging Face vision-language model.

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from the folder. Each observation
becomes one user turn ``[{"type": "image"}, {"type": "text", "text": prompt}]`` rendered by
the processor's chat template (generation prompt added); without a template the text is
``"<image token>\\n" + prompt``. The image (uint8 ``(H, W, 3)``) goes to the processor as a
PIL image, which resizes it as the model expects. Output: the decoded new tokens as a text
action. See :mod:`baselines.hf` for batching, seeding and errors.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from baselines.hf import (
    GenerateAdapter,
    chat_template_flag,
    check_model_kind,
    load_local_config,
    local_model_dir,
    resolve_device,
)

__all__ = ["HFVLMPolicy"]


class HFVLMPolicy(GenerateAdapter):
    """A local ``AutoModelForImageTextToText`` + ``AutoProcessor`` as a policy on image + prompt."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        device: str | None = None,
        dtype: Any = None,
        use_chat_template: bool | None = None,
        batch_prompts: bool = False,
        trust_remote_code: bool = False,
        **gen_kwargs: Any,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        super().__init__(max_new_tokens, temperature, top_p, gen_kwargs)
        self.path = local_model_dir(path, "vlm")
        config = load_local_config(self.path, "vlm", trust_remote_code)
        check_model_kind(config, self.path, "vlm")
        self.device = resolve_device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(
                str(self.path), local_files_only=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot load an AutoProcessor from {str(self.path)!r} (expected processor/tokenizer files "
                f"saved with processor.save_pretrained): {exc}"
            ) from None
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or not hasattr(self.processor, "image_processor"):
            raise ValueError(
                f"the processor in {str(self.path)!r} ({type(self.processor).__name__}) lacks a tokenizer or an "
                "image processor; expected a vision-language processor"
            )
        self.prepare_tokenizer()
        extra = {"dtype": dtype} if dtype is not None else {}
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code, **extra
        ).to(self.device).eval()
        self.use_chat_template = chat_template_flag(self.processor, use_chat_template, self.path, "processor")
        self.seed, self.batch_prompts = int(seed), bool(batch_prompts)

    def prompt_text(self, observation: dict) -> str:
        """The text (with the processor's image placeholder) for one observation."""
        prompt = str(observation.get("prompt", ""))
        if self.use_chat_template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        return f"{image_token}\n{prompt}"

    def model_inputs(self, observations: list[dict]) -> dict[str, Any]:
        """Processor outputs (ids, attention mask, pixel values, ...) for the observations."""
        from PIL import Image

        images = []
        for obs in observations:
            image = np.asarray(obs.get("image"))
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"observation image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
            images.append(Image.fromarray(image))
        texts = [self.prompt_text(obs) for obs in observations]
        return dict(self.processor(text=texts, images=images, return_tensors="pt", padding=True))

    def decoding_settings(self) -> dict[str, Any]:
        """Generation settings plus the adapter kind, for results files."""
        return {"adapter": "hf-vlm", "chat_template": self.use_chat_template, **super().decoding_settings()}

    def __repr__(self) -> str:
        return f"HFVLMPolicy({str(self.path)!r})"
