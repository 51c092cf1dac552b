"""Native LLaDA-V (``model_type: llava_llada``: GSAI-ML/LLaDA-V): SigLIP tower + MLP projector on a LLaDA LM, no remote code.

LLaDA-V's published code (the LLaDA-V repo's ``train/llava``: LLaVA-NeXT's ``LlavaMetaModel`` on
a Llama-named copy of LLaDA) computes, for the images its ``process_images`` makes:

* the LM: a Llama decoder run bidirectionally (``model.embed_tokens``, ``model.layers.N.*``,
  ``model.norm``, ``lm_head``: the names of transformers' ``LlamaForCausalLM``, built here from
  the same Llama config keys with sdpa attention; :class:`agents.hf.denoiser.HFDenoiserBase`
  gives it the 4-D bidirectional mask, positions and KV cache);
* the vision tower: SigLIP with its last layer deleted and no head, features = the last kept
  layer's output before ``post_layernorm`` (``model.vision_tower.vision_tower.vision_model.*``:
  transformers' ``SiglipVisionModel`` names). Its sizes are the weights' (hidden, patch, image
  size, layers, MLP width); heads, norm eps and activation come from an optional ``vision_config``
  key of ``config.json`` (the tiny test fixture has one), else SigLIP-so400m-patch14-384's, the
  tower LLaDA-V ships (``mm_vision_tower``);
* the projector ``model.mm_projector`` (``mm_projector_type``: ``linear`` or ``mlpNx_gelu``) and,
  with ``unpad`` merging, ``model.image_newline``.

Image features of one square image at the tower's resolution (what our image processing makes):
with ``image_aspect_ratio`` ``anyres``/``anyres_max_N`` the published code sees the resized
image plus one tile (the 1x1 grid must be the best of ``image_grid_pinpoints``), so the features
are the base grid followed by the tile grid (``spatial_unpad``: one ``image_newline`` after each
row; ``flat`` / ``spatial``: the grid as is); any other aspect ratio gives the base grid alone.
Other published options (resamplers, ``nobase``, ``maxpool2x2``, start/end tokens, non-SigLIP
towers) are refused by field. :meth:`LLaDAVModel.save_pretrained` writes the same ``config.json``
and weight names. The equality with the published code is tested on a fixture it wrote
(``scripts/make_native_fixtures.py llada_v``; tests/test_native_llada_v.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

from agents.hf.llada import _dtype, check_published, load_safetensors, read_config, write_published

__all__ = ["LLaDAVModel", "is_llada_v"]

#: SigLIP-so400m-patch14-384 (LLaDA-V's tower) settings that the weights do not show
SIGLIP_SO400M = {"num_attention_heads": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
#: LLaDA's mask token id (the published LLaDA-V code hard-codes it)
LLADA_MASK_ID = 126336
_LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
               "attention_bias", "tie_word_embeddings", "eos_token_id")  # fmt: skip
_TOWER = "model.vision_tower.vision_tower.vision_model."


def is_llada_v(raw: dict[str, Any]) -> bool:
    """Whether a raw ``config.json`` is LLaDA-V's (``model_type`` ``llava_llada``)."""
    return str(raw.get("model_type", "")).lower() == "llava_llada"


@dataclass(frozen=True)
class ImageLayout:
    """How one image's projected grid becomes placeholder features (module docstring)."""

    tile: bool  #: anyres: the base grid is followed by the (single) tile's grid
    newline: bool  #: unpad: one image_newline after each row of the tile grid


def _pinpoints(value: Any, size: int, where: str) -> list[tuple[int, int]]:
    if isinstance(value, str) and "x" in value:  # "(1x1),...,(6x6)": a range of grids, in tiles of the tower's size
        found = re.findall(r"\((\d+)x(\d+)\)", value)
        if not found:
            raise ValueError(f"{where}: image_grid_pinpoints={value!r} is not '(AxB),...,(CxD)'")
        (a, b), (c, d) = map(int, found[0]), map(int, found[-1])
        return [(i * size, j * size) for i in range(a, c + 1) for j in range(b, d + 1)]
    try:
        return [(int(w), int(h)) for w, h in (json.loads(value) if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: image_grid_pinpoints={value!r} is not a list of [width, height] pairs") from None


def _one_tile(pinpoints: list[tuple[int, int]], size: int) -> bool:
    """Whether LLaVA's select_best_resolution picks (size, size) for a size x size image (most kept pixels, least waste)."""
    best = max(pinpoints, key=lambda wh: (min(min(wh) / size, 1.0) ** 2, -wh[0] * wh[1]))
    return best == (size, size)


def image_layout(raw: dict[str, Any], size: int, where: str) -> ImageLayout:
    """The :class:`ImageLayout` of LLaDA-V's ``mm_*`` / ``image_*`` config keys (ValueError naming an unsupported one)."""
    tower = str(raw.get("mm_vision_tower") or raw.get("vision_tower") or "")
    if "siglip" not in tower.lower():
        raise ValueError(f"{where}: mm_vision_tower={tower!r}: native LLaDA-V runs SigLIP towers only (as published)")
    for key in ("mm_resampler_type", "mm_use_im_start_end", "add_faster_video"):
        if raw.get(key):
            raise ValueError(f"{where}: {key}={raw[key]!r} is not supported natively (LLaDA-V's checkpoints do not set it)")
    merge, aspect = str(raw.get("mm_patch_merge_type") or "flat"), str(raw.get("image_aspect_ratio") or "square")
    if merge not in ("flat", "spatial", "spatial_unpad"):
        raise ValueError(f"{where}: mm_patch_merge_type={merge!r} is not supported natively (flat, spatial, spatial_unpad)")
    if not aspect.startswith("anyres"):
        return ImageLayout(tile=False, newline=False)
    if aspect != "anyres" and not re.fullmatch(r"anyres_max_\d+", aspect):
        raise ValueError(f"{where}: image_aspect_ratio={aspect!r} is not supported natively (anyres, anyres_max_N, pad, square)")
    if not _one_tile(_pinpoints(raw.get("image_grid_pinpoints") or [], size, where), size):
        raise ValueError(f"{where}: image_grid_pinpoints={raw.get('image_grid_pinpoints')!r} does not make a {size} x {size} "
                         f"image one tile; native LLaDA-V needs the 1x1 grid ({size}, {size}) among them")  # fmt: skip
    return ImageLayout(tile=True, newline=merge == "spatial_unpad")


def _projector(kind: str, vision: int, hidden: int, where: str) -> nn.Module:
    """LLaVA's ``build_vision_projector`` for ``linear`` and ``mlpNx_gelu`` (the same module indices)."""
    if kind == "linear":
        return nn.Linear(vision, hidden)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match:
        raise ValueError(f"{where}: mm_projector_type={kind!r} is not supported natively (linear, mlpNx_gelu)")
    layers: list[nn.Module] = [nn.Linear(vision, hidden)]
    for _ in range(1, int(match.group(1))):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers)


def _vision_config(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> SiglipVisionConfig:
    """The SigLIP tower's config: sizes from its weights, the rest from ``vision_config`` or SigLIP-so400m."""
    try:
        patch = tensors[_TOWER + "embeddings.patch_embedding.weight"]
        positions = tensors[_TOWER + "embeddings.position_embedding.weight"].shape[0]
        fc1 = tensors[_TOWER + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise ValueError(f"{where}: the safetensors hold no SigLIP tower weight {exc.args[0]!r}") from None
    layers = 1 + max(int(k[len(_TOWER) :].split(".")[2]) for k in tensors if k.startswith(_TOWER + "encoder.layers."))
    side = round(positions**0.5)
    given = raw.get("vision_config") if isinstance(raw.get("vision_config"), dict) else {}
    settings = {key: given.get(key, default) for key, default in SIGLIP_SO400M.items()}
    return SiglipVisionConfig(hidden_size=patch.shape[0], patch_size=patch.shape[-1], image_size=side * patch.shape[-1],
                              num_hidden_layers=layers, intermediate_size=fc1.shape[0], num_channels=patch.shape[1],
                              vision_use_head=False, attn_implementation="sdpa", **settings)  # fmt: skip


class _VisionModel(nn.Module):
    """Holds a SigLIP transformer as ``vision_model`` (transformers 5 dropped that level from SiglipVisionModel)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision_model = model


class _Tower(nn.Module):
    """LLaVA's ``SigLipVisionTower`` (weights under ``vision_tower.vision_model``; no head, last layer deleted)."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        model = SiglipVisionModel(config)
        self.vision_tower = model if hasattr(model, "vision_model") else _VisionModel(model)

    @property
    def transformer(self) -> nn.Module:
        """The module with ``embeddings`` and ``encoder``."""
        return self.vision_tower.vision_model


class LLaDAVModel(LlamaForCausalLM):
    """LLaDA-V as transformers' Llama LM with LLaDA-V's tower, projector and newline under its published names."""

    published_config: dict[str, Any]

    def __init__(self, config: LlamaConfig, vision: SiglipVisionConfig, layout: ImageLayout, projector: str,
                 newline: bool) -> None:  # fmt: skip
        super().__init__(config)
        self.layout = layout
        self.model.vision_tower = _Tower(vision)
        self.model.mm_projector = _projector(projector, vision.hidden_size, config.hidden_size, "config.json")
        if newline:  # the published LlavaMetaModel makes it whenever the merge type says unpad
            self.model.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    @property
    def image_size(self) -> int:
        """The tower's input resolution (square)."""
        return int(self.model.vision_tower.transformer.config.image_size)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, P, hidden) features of (N, 3, S, S) square images, laid out as the published code does (module docstring)."""
        vision = self.model.vision_tower.transformer
        hidden = vision.encoder(inputs_embeds=vision.embeddings(pixel_values.to(self.dtype))).last_hidden_state
        feats = self.model.mm_projector(hidden)
        if not self.layout.tile:
            return feats
        tile = feats
        if self.layout.newline:
            n, patches, width = feats.shape
            side = round(patches**0.5)
            newline = self.model.image_newline.to(feats.dtype).expand(n, side, 1, width)
            tile = torch.cat([feats.view(n, side, side, width), newline], 2).reshape(n, side * (side + 1), width)
        return torch.cat([feats, tile], 1)

    @classmethod
    def from_published(cls, folder: str | Path, dtype: torch.dtype | str | None = None) -> LLaDAVModel:
        """The model of a LLaDA-V folder (``config.json`` + safetensors under its names); ``dtype``: else the weights'."""
        from accelerate import init_empty_weights

        folder = Path(folder)
        raw, where = read_config(folder, "LLaDA-V")
        if raw.get("rope_scaling"):
            raise ValueError(f"{where}: rope_scaling={raw['rope_scaling']!r} is not supported natively (LLaDA-V has none)")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "mm_hidden_size") if raw.get(k) is None]  # fmt: skip
        if missing:
            raise ValueError(f"{where} (model_type llava_llada) lacks {missing}; it is not a LLaDA-V checkpoint's config")
        tensors = load_safetensors(folder)
        vision = _vision_config(raw, tensors, str(folder))
        layout = image_layout(raw, vision.image_size, where)
        config = LlamaConfig(**{k: raw[k] for k in _LLAMA_KEYS if raw.get(k) is not None}, attn_implementation="sdpa")
        mask = raw.get("mask_token_id", LLADA_MASK_ID if config.vocab_size > LLADA_MASK_ID else None)
        config.mask_token_id = mask
        with init_empty_weights():
            model = cls(config, vision, layout, str(raw.get("mm_projector_type") or "linear"),
                        "unpad" in str(raw.get("mm_patch_merge_type") or ""))
        expected = dict(model.named_parameters())
        if config.tie_word_embeddings:
            expected.pop("lm_head.weight", None)
        check_published(folder, "LLaDA-V", {name: param.shape for name, param in expected.items()}, tensors)
        target = _dtype(dtype) or tensors["model.embed_tokens.weight"].dtype
        model.load_state_dict({k: tensors[k].to(target) for k in expected}, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.published_config = dict(raw)
        return model.eval()

    def save_pretrained(self, save_directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None, **_: Any) -> None:
        """``config.json`` with the published LLaDA-V keys and ``model.safetensors`` under the published weight names."""
        state = self.state_dict() if state_dict is None else state_dict
        skip = {"lm_head.weight"} if self.config.tie_word_embeddings else set()
        names = [n for n, _ in self.named_parameters(remove_duplicate=False) if n not in skip]
        tensors = {name: state[name].detach().contiguous().cpu() for name in names if name in state}
        raw = dict(getattr(self, "published_config", {}) or {})
        raw["torch_dtype"] = str(tensors["model.embed_tokens.weight"].dtype).removeprefix("torch.")
        raw["vocab_size"] = int(tensors["model.embed_tokens.weight"].shape[0])
        raw.setdefault("model_type", "llava_llada")
        write_published(save_directory, tensors, raw)
