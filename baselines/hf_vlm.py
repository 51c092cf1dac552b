"""``HFVLMPolicy`` (spec ``hf-vlm:<dir>``): a local Hugging Face vision-language model.

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from the folder. Each observation
becomes one user turn ``[{"type": "image"}, {"type": "text", "text": prompt}]`` rendered by
the processor's chat template (generation prompt added); without a template the text is
``"<image token>\\n" + prompt``. The image (uint8 ``(H, W, 3)``) goes to the processor as a
PIL image, which resizes it as the model expects. Output: the decoded new tokens as a text
action. Constructor options: :class:`baselines.hf.GenerateAdapter`; batching, seeding and
errors: :mod:`baselines.hf`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.hf import GenerateAdapter

__all__ = ["HFVLMPolicy"]


class HFVLMPolicy(GenerateAdapter):
    """A local ``AutoModelForImageTextToText`` + ``AutoProcessor`` as a policy on image + prompt."""

    kind = "vlm"
    template_owner_name = "processor"

    def load_processing(self, trust_remote_code: bool) -> Any:
        """The folder's ``AutoProcessor`` (chat-template owner) and its tokenizer."""
        from transformers import AutoProcessor

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
        return self.processor

    def auto_model_class(self) -> Any:
        """``AutoModelForImageTextToText``."""
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText

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
