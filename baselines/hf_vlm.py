"""``HFVLMPolicy`` (spec ``hf-vlm:<dir>``): a local Hugging Face vision-language model.

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from the folder. Each observation
becomes one user turn ``[{"type": "image"}, {"type": "text", "text": prompt}]`` rendered by
the processor's chat template (generation prompt added); without a template the text is
``"<image token>\\n" + prompt``. The image (uint8 ``(H, W, 3)``) goes to the processor as a
PIL image, which resizes it as the model expects. Output: the decoded new tokens as a text
action. Constructor options: :class:`baselines.hf.GenerateAdapter`; batching, seeding and
errors: :mod:`baselines.hf`.

Without torchvision (not installed by default): a processor whose video sub-processor imports
it (Qwen2-VL / Qwen2.5-VL) is built image-only -- the same processor class, its image processor
on the PIL backend, no video processor (:func:`images_only_processor`); a processor that still
cannot load raises ``ImportError`` saying which torchvision to install.
"""

from __future__ import annotations

from pathlib import Path
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
        except ImportError as exc:  # e.g. Qwen2-VL's video processor needs torchvision
            self.processor = images_only_processor(self.path, trust_remote_code, exc)
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


def torchvision_hint() -> str:
    """What to install for processors that need torchvision, for the installed torch."""
    import torch

    version = torch.__version__.split("+")[0]
    major, minor = (int(p) for p in version.split(".")[:2])
    paired = f"torchvision 0.{minor + 15}" if major == 2 else "the torchvision release paired with it"
    return (
        f"install the torchvision build that matches torch {torch.__version__} ({paired}.x, from the same "
        "package index as torch, e.g. pip install torchvision --index-url https://download.pytorch.org/whl/cpu "
        "for the CPU build)"
    )


def images_only_processor(folder: Path, trust_remote_code: bool, error: ImportError) -> Any:
    """The folder's processor class built without its video processor (our envs show no video).

    Transformers loads every sub-processor of a processor, and some (Qwen2-VL / Qwen2.5-VL
    video processors) import torchvision even for image-only use; the image processor falls
    back to its PIL backend by itself. Raise ``ImportError`` naming what to install when the
    processor still cannot be built.
    """
    import json

    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import processor_class_from_name

    def fail(why: str) -> ImportError:
        return ImportError(
            f"cannot load the processor in {str(folder)!r}: {str(error).strip().splitlines()[0]} ({why}); "
            f"{torchvision_hint()}"
        )

    config: dict[str, Any] = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file() and "processor_class" not in config:
            try:
                config = {**json.loads(path.read_text(encoding="utf-8")), **config}
            except (OSError, ValueError):
                pass
    cls = processor_class_from_name(str(config.get("processor_class", ""))) if config.get("processor_class") else None
    if cls is None or "video_processor" not in cls.get_attributes():
        raise fail("its processor class is not one that can run without a video processor") from None

    class ImagesOnly(cls):  # type: ignore[misc, valid-type]
        """``cls`` with no video processor: image + text inputs only."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = f"{cls.__name__}ImagesOnly"
    try:
        image_processor = AutoImageProcessor.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code, backend="pil"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
        template = folder / "chat_template.jinja"
        chat_template = template.read_text(encoding="utf-8") if template.is_file() else tokenizer.chat_template
        return ImagesOnly(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=chat_template
        )
    except (ImportError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise fail(f"an image-only {cls.__name__} failed too: {type(exc).__name__}: {exc}") from None
