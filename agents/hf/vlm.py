"""``HFVLMDiffusionPolicy`` (spec ``hf-vlm-dllm:DIR``): a LLaVA-style HF VLM trained and sampled as masked diffusion.

The shape of LLaDA-V and LaViDa: a local ``AutoModelForImageTextToText`` folder (vision tower +
projector + language model, e.g. ``LlavaForConditionalGeneration``) whose language model runs
with full bidirectional attention over the prompt and the masked response, as A2D does for a
text LM (:class:`agents.hf.policy.HFDenoiser`); logits at ``i`` predict token ``i``.

* Images: the observation's uint8 ``(H, W, 3)`` image goes through the folder's image processor
  (``AutoProcessor`` / ``AutoImageProcessor``; PIL backends need no torchvision) to pixel tensors
  ``(N, 3, S, S)``; only a folder whose files describe no image processor gets a default: SigLIP's
  (mean/std 0.5) for a SigLIP tower, else CLIP-normalised tensors at the vision config's
  ``image_size`` (a preprocessor config that does not load is an error naming it). :class:`HFVLMDenoiser` runs the backbone's ``get_image_features`` (vision tower
  + projector) and writes the features over the image placeholder tokens' embeddings, then runs
  the whole backbone on ``inputs_embeds`` with a 4-D additive (bidirectional) mask.
* Prompt: one user turn ``[image, text]`` through the processor's (else the tokenizer's) chat
  template, else ``"<image>\\n" + prompt``; the one image token is expanded to ``num_patches``
  placeholders (measured once from the vision tower's output), as the model's processor does.
  The image token's own string inside a prompt text is removed (only the observation's image is
  shown). Placeholders are never masked (``prompt_mask_prob``) and never predicted.
* Responses are text only: Grounding and VisualMath see the image; ImageEdit answers in text and
  is scored on its text (the edited-image term scores 0), as for the text backbones.
* Mask token: ``mask_token_id=``, else the text config's ``mask_token_id``, else the tokenizer's;
  otherwise ``<|mdm_mask|>`` is added and the embeddings resized (as A2D).
* Checkpoints: the backbone in its own HF format + processor (tokenizer, image processor, chat
  template) + ``policy_config.json`` (``format: lavida-hf-vlm-diffusion``, mask/image ids,
  ``num_patches``, decoding). KV cache (``cache: prefix | dual``) through
  :class:`agents.hf.denoiser.HFDenoiserBase`'s hooks; each image's features are computed once for all
  the rollout rows that show it (:class:`HFVLMDenoiser` keeps them while no gradient is recorded).

Everything else (sampler with forced positions, the three likelihood estimators, SFT rows,
answer forcing, ``rollout_from``) is :class:`agents.diffusion.policy.DiffusionPolicy`'s code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.diffusion.policy import POLICY_CONFIG, DecodingConfig, read_policy_meta
from agents.hf.denoiser import DenoiserConfig, HFDenoiserBase, config_vocab_size, embedding_rows
from agents.hf.llada_v import is_llada_v
from agents.hf.loaders import ADDED_MASK, hf_folder, mask_id_of
from agents.hf.policy import HFDiffusionPolicy
from agents.hf.prompts import image_turn_ids

__all__ = ["FORMAT", "HFVLMDenoiser", "HFVLMDiffusionPolicy"]

FORMAT = "lavida-hf-vlm-diffusion"
#: files that describe an image processor; only a folder without one gets a default normalisation
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: OpenAI CLIP normalisation, for folders without an image processor (and no SigLIP tower)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class HFVLMDenoiser(HFDenoiserBase):
    """``forward(input_ids, pixel_values=None, attention_mask=None) -> .logits`` (B, L, V); image features at the placeholders.

    The base's bidirectional mask, positions, vocab limit and KV-cache hooks (the language model takes a
    ``DynamicCache``); a cached window never holds placeholders, so only :meth:`encode_with_cache` sees
    images. Without gradients the projected features of an image are kept (:attr:`feature_memo`, keyed
    by its pixels and the vision weights' versions), so an image goes through the vision tower once for all
    the rollout rows that show it, not at every denoising step or block.
    """

    kind = "vlm"
    logits_shift = False
    #: how many images' features the no-grad memo keeps
    MEMO_SIZE = 64

    def __init__(self, backbone: nn.Module, mask_token_id: int, image_token_id: int, vocab_limit: int,
                 num_patches: int, image_size: int) -> None:  # fmt: skip
        for name in ("get_image_features", "get_input_embeddings", "get_output_embeddings"):
            if not callable(getattr(backbone, name, None)):
                raise ValueError(f"{type(backbone).__name__} has no {name}(); hf-vlm-dllm: needs a LLaVA-style "
                                 "AutoModelForImageTextToText (vision tower + projector + language model)")  # fmt: skip
        if image_token_id == mask_token_id:
            raise ValueError(f"the image token and the mask token are the same id {mask_token_id}; pass another mask_token_id=")
        vocab = config_vocab_size(getattr(backbone, "config", None), vocab_limit)
        config = DenoiserConfig(vocab_size=max(vocab, int(vocab_limit)), mask_token_id=int(mask_token_id),
                                num_patches=int(num_patches), image_size=int(image_size), image_token_id=int(image_token_id))  # fmt: skip
        super().__init__(backbone, config, vocab_limit)
        self.feature_memo: dict[tuple, torch.Tensor] = {}
        #: vision-tower calls made (one per image not found in the memo)
        self.vision_calls = 0

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, P, H) projected vision features of (N, 3, S, S) pixel tensors."""
        dtype = self.backbone.get_input_embeddings().weight.dtype
        self.vision_calls += int(pixel_values.shape[0])
        out = self.backbone.get_image_features(pixel_values=pixel_values.to(dtype))
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        if not isinstance(feats, torch.Tensor) or feats.dim() != 3 or feats.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"{type(self.backbone).__name__}.get_image_features gave {type(feats).__name__} "
                f"{tuple(getattr(feats, 'shape', ()))} for {pixel_values.shape[0]} images; expected (N, patches, hidden) "
                "(a LLaVA-style model with one fixed-size feature grid per image)"
            )
        return feats

    def _features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """:meth:`image_features`, from the memo for images already seen when no gradient is recorded."""
        if torch.is_grad_enabled():
            return self.image_features(pixel_values)
        weight = self.backbone.get_input_embeddings().weight
        versions = (str(weight.device), weight.dtype, tuple(p._version for p in self.backbone.parameters()))
        keys = [(versions, hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest())
                for image in pixel_values]  # fmt: skip
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # rows sharing an image (a group) share one call
        missing = sorted(i for key, i in first.items() if key not in self.feature_memo)
        if missing:
            fresh = self.image_features(pixel_values[missing])
            if len(self.feature_memo) + len(missing) > self.MEMO_SIZE:  # keep only what this batch still reads
                self.feature_memo = {key: self.feature_memo[key] for key in keys if key in self.feature_memo}
            for i, feats in zip(missing, fresh):
                self.feature_memo[keys[i]] = feats
        return torch.stack([self.feature_memo[key] for key in keys])

    def backbone_inputs(self, input_ids: torch.Tensor, pixel_values: Any = None) -> dict[str, torch.Tensor]:
        """``inputs_embeds``: token embeddings, with each image's features over its row's ``num_patches`` placeholders."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        is_image = input_ids == self.config.image_token_id
        counts = is_image.sum(1)
        rows = counts > 0
        if bool(rows.any()):
            p = self.config.num_patches
            if pixel_values is None or pixel_values.shape[0] != input_ids.shape[0]:
                got = "none" if pixel_values is None else f"{pixel_values.shape[0]}"
                raise ValueError(f"rows hold image placeholders but {got} pixel_values were given for {input_ids.shape[0]} rows; "
                                 "pass one image per row")  # fmt: skip
            if bool((counts[rows] != p).any()):
                raise ValueError(f"a row holds {counts[rows].tolist()} image placeholders; each row needs 0 or {p} "
                                 "(build prompts with HFVLMDiffusionPolicy.prompt_ids)")  # fmt: skip
            feats = self._features(pixel_values[rows]).to(embeds.dtype)
            embeds = embeds.masked_scatter(is_image[..., None], feats.reshape(-1, embeds.shape[-1]))
        return {"inputs_embeds": embeds}


def _image_token_id(config: Any, tokenizer: Any, folder: Any) -> int:
    for value in (getattr(config, "image_token_id", None), getattr(config, "image_token_index", None),
                  getattr(tokenizer, "image_token_id", None)):  # fmt: skip
        if value is not None:
            return int(value)
    raise ValueError(f"{str(folder)!r}: no image token id (config.image_token_id / image_token_index, tokenizer.image_token); "
                     "hf-vlm-dllm: needs a LLaVA-style model that marks image positions with a placeholder token")  # fmt: skip


class HFVLMDiffusionPolicy(HFDiffusionPolicy):
    """A LLaVA-style HF VLM as a trainable masked-diffusion policy that sees the image (module docstring)."""

    def __init__(self, model: HFVLMDenoiser, tokenizer: Any, processor: Any = None, image_processor: Any = None,
                 decoding: DecodingConfig | None = None, seed: int = 0, use_chat_template: bool | None = None,
                 remote_code: bool = False) -> None:  # fmt: skip
        super().__init__(model, tokenizer, decoding, seed=seed, use_chat_template=False, remote_code=remote_code)
        self.processor, self.image_processor = processor, image_processor
        image = model.config.image_token_id
        if image in (self.ids.pad, self.ids.eos):
            raise ValueError(f"the image token id {image} is also the tokenizer's pad/eos token; give the tokenizer distinct ones")
        self.ids = replace(self.ids, image=image)
        self.image_token = tokenizer.convert_ids_to_tokens(image)
        owner = processor if getattr(processor, "chat_template", None) else tokenizer
        self._template_owner = owner
        self.use_chat_template = bool(getattr(owner, "chat_template", None)) if use_chat_template is None else bool(use_chat_template)

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | os.PathLike, kind: str = "vlm", *, trust_remote_code: bool = False, seed: int = 0,
                mask_token_id: int | None = None, decoding: DecodingConfig | None = None, dtype: Any = None,
                use_chat_template: bool | None = None) -> HFVLMDiffusionPolicy:  # fmt: skip
        """Load a local ``AutoModelForImageTextToText`` folder (``kind`` must be ``vlm``) with its processor."""
        if kind != "vlm":
            raise ValueError(f"HFVLMDiffusionPolicy kind must be 'vlm', got {kind!r}")
        folder = hf_folder(path)
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if is_llada_v(raw):  # native: LLaDA-V's published names and config keys, no remote code
            backbone, tokenizer, processor, image_processor, text_config, size = _native_llada_v(folder, dtype)
            remote = False
        else:
            backbone, tokenizer, processor, image_processor, text_config, size, remote = _auto_vlm(
                folder, raw, trust_remote_code, dtype)
        image_id = _image_token_id(backbone.config, tokenizer, folder)
        mask = mask_id_of(mask_token_id, text_config, tokenizer, folder)
        if mask is None:
            tokenizer.add_special_tokens({"mask_token": ADDED_MASK})
            mask = tokenizer.mask_token_id
        if len(tokenizer) > embedding_rows(backbone):
            backbone.resize_token_embeddings(len(tokenizer))
        probe = HFVLMDenoiser(backbone, mask, image_id, len(tokenizer), 0, 1)
        pixels = _pixel_values([np.zeros((32, 32, 3), np.uint8)], image_processor, size)
        with torch.no_grad():
            patches = int(probe.image_features(pixels.to(next(backbone.parameters()).device)).shape[1])
        model = HFVLMDenoiser(backbone, mask, image_id, len(tokenizer), patches, int(pixels.shape[-1]))
        return cls(model, tokenizer, processor, image_processor, decoding, seed=seed, use_chat_template=use_chat_template,
                   remote_code=remote)  # fmt: skip

    # ----- inputs -----------------------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        """The prompt's ids: one user turn [image, text], its image token expanded to ``num_patches`` placeholders."""
        ids = image_turn_ids(self.tokenizer, self._template_owner, self.image_token, text, self.use_chat_template)
        image, placeholders = self.ids.image, [self.ids.image] * self.model.config.num_patches
        expanded, seen = [], False
        for token in ids:  # the first image token becomes the placeholders; any other is dropped
            if token == image and not seen:
                expanded, seen = expanded + placeholders, True
            elif token != image:
                expanded.append(token)
        if not seen:  # a template that drops the image: placeholders first
            expanded = placeholders + expanded
        return expanded

    def pixel_values(self, observations: list[dict]) -> torch.Tensor:
        """(N, 3, S, S) float pixel tensors of the observations' images, as the model's image processor makes them."""
        size = self.model.config.image_size
        if not observations:
            return torch.zeros(0, 3, size, size)
        return _pixel_values([obs.get("image") for obs in observations], self.image_processor, size)

    def decoding_settings(self) -> dict[str, Any]:
        """Decoding settings plus the backbone kind, mask/image ids and placeholder count."""
        c = self.model.config
        return {**asdict(self.decoding), "backbone": "vlm", "model_type": str(getattr(self.model.backbone.config, "model_type", "")),
                "logits_shift": False, "mask_token_id": c.mask_token_id, "image_token_id": c.image_token_id,
                "num_patches": c.num_patches, "image_size": c.image_size}  # fmt: skip

    # ----- persistence ----------------------------------------------------------------
    def save_pretrained(self, path: str) -> None:
        """:meth:`HFDiffusionPolicy.save_pretrained` (backbone in its HF format, tokenizer), the processor, our ``policy_config.json``."""
        super().save_pretrained(path)
        if self.processor is not None:
            self.processor.save_pretrained(path)
        elif self.image_processor is not None:
            self.image_processor.save_pretrained(path)
        meta_path = os.path.join(path, POLICY_CONFIG)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        c = self.model.config
        meta.update(format=FORMAT, kind="vlm", image_token_id=c.image_token_id, num_patches=c.num_patches, image_size=c.image_size)
        with open(meta_path, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, trust_remote_code: bool = False,
                        **decoding_overrides: Any) -> HFVLMDiffusionPolicy:  # fmt: skip
        """Rebuild a policy written by :meth:`save_pretrained` (remote code again needs ``trust_remote_code=True``)."""
        meta, decoding = read_policy_meta(path, "HFVLMDiffusionPolicy", FORMAT, decoding_overrides)
        policy = cls.from_hf(path, trust_remote_code=trust_remote_code, seed=int(meta.get("seed", 0)),
                             mask_token_id=meta.get("mask_token_id"), decoding=decoding,
                             use_chat_template=meta.get("use_chat_template"))  # fmt: skip
        saved = meta.get("num_patches")
        if saved is not None and int(saved) != policy.model.config.num_patches:
            raise ValueError(f"{path}: policy_config.json says {saved} image patches but the vision tower gives "
                             f"{policy.model.config.num_patches}; the image processor or vision config changed")  # fmt: skip
        if meta.get("lora"):  # an adapter written by agents.hf.lora.save_backbone (via HFDiffusionPolicy.save_pretrained)
            from agents.hf.lora import load_adapter

            load_adapter(policy, path, meta["lora"])
        from agents.hf.precision import load_master

        load_master(policy.model, path)  # fp32 master weights saved beside a lower-precision backbone
        if device is not None:
            policy.model.to(device)
        return policy


def _auto_vlm(folder: Any, raw: dict[str, Any], trust_remote_code: bool, dtype: Any) -> tuple:
    """``(backbone, tokenizer, processor, image processor, text config, image size, remote)`` of an
    ``AutoModelForImageTextToText`` folder (remote code only with ``trust_remote_code``)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type, auto_map = str(raw.get("model_type", "")), raw.get("auto_map") or {}
    remote = bool(auto_map) and model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not remote:
        raise ValueError(
            f"{str(folder)!r} (model_type {model_type!r}) is not a vision-language model AutoModelForImageTextToText "
            "knows; hf-vlm-dllm: needs one (e.g. llava, or llava_llada: LLaDA-V); a text-only causal LM goes under "
            "hf-a2d:, a masked-diffusion LM under hf-dllm:"
        )
    if remote and not trust_remote_code:
        raise ValueError(f"{str(folder)!r} runs its own model code ({auto_map}); pass trust_remote_code=True "
                         "(--trust_remote_code true) if you trust it")  # fmt: skip
    processor, image_processor = _load_processing(folder, trust_remote_code)
    tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=trust_remote_code
    )
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    extra = {"dtype": dtype} if dtype is not None else {}
    backbone = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True,
                                                           trust_remote_code=trust_remote_code, **extra)  # fmt: skip
    size = _vision_size(config)
    image_processor = image_processor or _default_image_processor(config, size)
    return backbone, tokenizer, processor, image_processor, text_config, size, remote


def _native_llada_v(folder: Any, dtype: Any) -> tuple:
    """``(backbone, tokenizer, processor, image processor, text config, image size)`` of a LLaDA-V folder
    (:mod:`agents.hf.llada_v`); no image processor config: SigLIP's (bicubic, mean/std 0.5) at the tower's size;
    a tokenizer without an image token gets ``<image>`` (its placeholder rows are overwritten by the features)."""
    from transformers import AutoTokenizer, SiglipImageProcessorPil

    from agents.hf.llada_v import LLaDAVModel

    backbone = LLaDAVModel.from_published(folder, dtype)
    processor, image_processor = _load_processing(folder, False)
    tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    size = backbone.image_size
    if image_processor is None:  # LLaDA-V's SigLipImageProcessor: bicubic to the tower's size, mean/std 0.5
        image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    if getattr(tokenizer, "image_token_id", None) is None:
        if "<image>" not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        backbone.config.image_token_id = int(tokenizer.convert_tokens_to_ids("<image>"))
    return backbone, tokenizer, processor, image_processor, backbone.config, size


def _vision_size(config: Any) -> int:
    vision = getattr(config, "vision_config", None)
    return int(getattr(vision, "image_size", 224) or 224)


def _load_processing(folder: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """``(processor or None, image processor or None)`` of a folder (PIL backends; no torchvision needed).

    None for the image processor only when no file describes one (:func:`_image_processor_file`): a folder with one
    whose image processor does not load is a ``ValueError`` naming the file and what failed (a default
    normalisation would be wrong for the model: CLIP's mean/std is not SigLIP's 0.5)."""
    from transformers import AutoImageProcessor, AutoProcessor

    failures: list[str] = []
    processor = None
    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except (ImportError, OSError, ValueError, TypeError, KeyError) as exc:
        failures.append(f"AutoProcessor: {type(exc).__name__}: {str(exc)[:200]}")
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        processor = processor if getattr(processor, "tokenizer", None) is not None else None
        try:
            image_processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True,
                                                                 trust_remote_code=trust_remote_code, backend="pil")  # fmt: skip
        except (ImportError, OSError, ValueError, TypeError, KeyError) as exc:
            failures.append(f"AutoImageProcessor: {type(exc).__name__}: {str(exc)[:200]}")
    config = _image_processor_file(folder)
    if image_processor is None and config is not None:
        raise ValueError(f"{config} describes the folder's image processor, but it did not load "
                         f"({'; '.join(failures) or 'no image processor'}); fix the file (a default normalisation would "
                         "not be the model's: CLIP mean/std, SigLIP 0.5), or delete it to use the default")  # fmt: skip
    return processor, image_processor


def _image_processor_file(folder: Any) -> str | None:
    """The file describing a folder's image processor: ``preprocessor_config.json``, else a ``processor_config.json``
    holding an ``image_processor`` entry (transformers 5 writes it there) or not readable as JSON; None: neither."""
    for name in PREPROCESSOR_FILES:
        path = os.path.join(str(folder), name)
        if not os.path.isfile(path):
            continue
        if name == PREPROCESSOR_FILES[0]:
            return path
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return path
        if isinstance(entry, dict) and "image_processor" in entry:
            return path
    return None


def _default_image_processor(config: Any, size: int) -> Any:
    """For a folder without an image processor: SigLIP's (square bicubic resize, mean/std 0.5) for a SigLIP
    tower; None (CLIP normalisation in :func:`_pixel_values`) otherwise."""
    vision = getattr(config, "vision_config", None)
    if "siglip" not in str(getattr(vision, "model_type", "")).lower():
        return None
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": size, "width": size})


def _pixel_values(images: list[Any], image_processor: Any, size: int) -> torch.Tensor:
    """(N, 3, S, S) float tensors: ``image_processor``'s output, else CLIP-normalised bicubic resizes to ``size``."""
    from PIL import Image

    pil = []
    for image in images:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"observation image must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
        pil.append(Image.fromarray(array))
    if image_processor is not None:
        values = image_processor(images=pil, return_tensors="pt")["pixel_values"]
    else:
        arrays = [np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for im in pil]
        mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
        values = torch.from_numpy(np.stack([(a - mean) / std for a in arrays])).permute(0, 3, 1, 2).contiguous()
    if not isinstance(values, torch.Tensor) or values.dim() != 4 or values.shape[0] != len(pil):
        raise ValueError(f"the image processor gave pixel_values {tuple(getattr(values, 'shape', ()))} for {len(pil)} images; "
                         "hf-vlm-dllm: needs one (3, S, S) tensor per image (LLaVA-style fixed resolution, no tiling)")  # fmt: skip
    return values.float()
