"""``HFDiffusionPolicy``: a local Hugging Face LM trained and sampled as a masked-diffusion policy.

Kinds (spec prefixes of :mod:`agents.specs`):

* ``a2d`` (``hf-a2d:DIR``) -- any ``AutoModelForCausalLM`` folder (Llama, Qwen2, Qwen3, ...): the
  same weights run with full bidirectional attention (a 4-D additive mask over the attended
  keys, so no causal mask) and a mask token added to the tokenizer (embeddings resized) when it
  has none, as the dllm project's A2D models do. Logits at ``i`` predict token ``i``.
* ``dream`` (``hf-dllm:DIR`` / ``hf-dream:DIR`` on a folder whose ``model_type`` is ``Dream``:
  Dream-v0-Base/Instruct-7B) -- native: Dream's published weights in transformers' Qwen2 modules
  (:mod:`agents.hf.dream`; no remote code, no trust flag), run with the same 4-D bidirectional
  mask as A2D; its logits at ``i`` predict token ``i + 1`` and :class:`HFDenoiser` shifts them
  back. Checkpoints keep Dream's ``config.json`` and weight names.
* ``llada`` (``hf-dllm:DIR`` on a folder whose ``model_type`` is ``llada``: LLaDA-8B-Base/Instruct,
  LLaDA-1.5) -- native: LLaDA's published config keys and safetensors in transformers' Llama modules
  (:mod:`agents.hf.llada`; no remote code, no trust flag, ``auto_map`` ignored), the same 4-D mask;
  checkpoints keep LLaDA's ``config.json`` and weight names.
* ``llada`` on any other folder -- a masked LM transformers knows (``AutoModelForMaskedLM``: BERT,
  ModernBERT, ...), or any other masked-diffusion LM, loaded by ``AutoModel`` (remote code via the
  config's ``auto_map`` runs only with ``trust_remote_code=True``); logits at ``i`` predict token ``i``. ``hf-dream:`` on such a remote-code folder shifts its logits as Dream's. The mask id
  is ``mask_token_id=``, else the config's ``mask_token_id``, else the tokenizer's mask token.
* Attention: a backbone run with the 4-D mask loads with sdpa (or eager); a folder asking for
  FlashAttention gets sdpa and a warning (:mod:`agents.hf.attention`), never silent causal attention.

Everything else is :class:`agents.diffusion.policy.DiffusionPolicy`'s code (sampler with forced
positions, the three likelihood estimators, SFT rows, answer forcing, ``rollout_from``): the
policy's ``model`` is an :class:`HFDenoiser` with the ``DiffusionModel`` call signature.
Prompts: the tokenizer's chat template (one user turn) when it has one, else the plain prompt;
images are not seen (text only; ImageEdit responses are text, scored on their text). So problems
whose prompts are the same sentence (every VisualMath problem of a family: the expression is only
in the image) cannot be told apart: ``sft_rollouts`` warns once when equal prompts get different
reference solutions (train a multimodal backbone, ``hf-vlm-dllm:``, for those tasks).
KV cache (``cache: prefix | dual``): A2D and native Dream/LLaDA (:meth:`HFDenoiser.encode_with_cache` /
:meth:`HFDenoiser.forward_window`, via :mod:`agents.hf.kv`); remote-code kinds decode with
``cache='none'`` after the sampler's one warning. Structural
ids: ``<pad>`` is the tokenizer's pad token when distinct from eos and mask, else the mask id;
there are no image codes. Checkpoints: the backbone in its own HF format + tokenizer +
``policy_config.json`` (``format: lavida-hf-diffusion``, kind, shift, mask id, decoding).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from agents.diffusion.codec import PaletteCodec
from agents.diffusion.layout import ResponseLayout
from agents.diffusion.policy import POLICY_CONFIG, DecodingConfig, DiffusionPolicy, read_policy_meta
from agents.hf.denoiser import DenoiserConfig, HFDenoiserBase, config_vocab_size, keys_and_positions, text_special_ids
from agents.hf.dream import is_dream, write_dream_config
from agents.hf.loaders import Source, hf_folder, pick_loader
from agents.policy import Rollouts

__all__ = ["FORMAT", "KINDS", "HFDenoiser", "HFDiffusionPolicy"]

FORMAT = "lavida-hf-diffusion"
KINDS = ("a2d", "llada", "dream")


class HFDenoiser(HFDenoiserBase):
    """``forward(input_ids, pixel_values=None, attention_mask=None) -> .logits`` (B, L, V): logits at i predict token i.

    ``a2d`` and native backbones (``published_config`` set: LLaDA, Dream) take the base's 4-D bidirectional
    mask, positions, logits shift and KV-cache hooks; a remote-code backbone gets ``attention_mask`` (B, L)
    only and has no cache hooks (its cache API is not one we can rely on).
    """

    def __init__(self, backbone: nn.Module, kind: str, mask_token_id: int, vocab_limit: int,
                 published_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        vocab = config_vocab_size(getattr(backbone, "config", None), vocab_limit)
        super().__init__(backbone, DenoiserConfig(vocab_size=max(vocab, int(vocab_limit)), mask_token_id=int(mask_token_id)),
                         vocab_limit)  # fmt: skip
        self.kind = kind
        self.published_config = published_config

    @property
    def logits_shift(self) -> bool:
        """Whether the backbone's logits at i predict token i + 1 (Dream)."""
        return self.kind == "dream"

    @property
    def supports_kv_cache(self) -> bool:
        """A2D and native backbones take a ``DynamicCache``; remote code does not."""
        return self.bidirectional_mask

    def forward(self, input_ids: torch.Tensor, pixel_values: Any = None, attention_mask: torch.Tensor | None = None) -> Any:
        """Bidirectional logits (B, L, V) over ``input_ids``; tokens past the tokenizer get ``NEG_LOGIT``."""
        if self.bidirectional_mask:
            return super().forward(input_ids, pixel_values, attention_mask)
        keys, _ = keys_and_positions(input_ids, attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=keys.long())
        logits = (out.logits if hasattr(out, "logits") else out[0]).float()
        return SimpleNamespace(logits=self.limit_vocab(self.unshift(logits)))

    @property
    def bidirectional_mask(self) -> bool:
        """Whether this module builds the 4-D bidirectional mask (A2D and native backbones; not remote code)."""
        return self.kind == "a2d" or self.published_config is not None


class HFDiffusionPolicy(DiffusionPolicy):
    """A Hugging Face LM as a trainable masked-diffusion policy (module docstring)."""

    def __init__(self, model: HFDenoiser, tokenizer: Any, decoding: DecodingConfig | None = None, seed: int = 0,
                 use_chat_template: bool | None = None, remote_code: bool = False) -> None:  # fmt: skip
        self.model, self.tokenizer = model, tokenizer
        self.codec = PaletteCodec()
        self.decoding = (decoding or DecodingConfig()).validate()
        self.seed, self.remote_code = int(seed), bool(remote_code)
        self._prompt_cache: dict[str, list[int]] = {}
        mask, eos = model.config.mask_token_id, tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token (responses end in eos padding)")
        pad = tokenizer.pad_token_id
        pad = pad if pad is not None and pad not in (eos, mask) else mask
        vocab = model.config.vocab_size
        self.ids = text_special_ids(pad, eos, mask, vocab)
        self.use_chat_template = bool(tokenizer.chat_template) if use_chat_template is None else bool(use_chat_template)

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | os.PathLike, kind: str = "auto", *, trust_remote_code: bool = False, seed: int = 0,
                mask_token_id: int | None = None, decoding: DecodingConfig | None = None, dtype: Any = None,
                use_chat_template: bool | None = None) -> HFDiffusionPolicy:  # fmt: skip
        """Load a local HF folder as ``kind`` (``a2d`` | ``llada`` | ``dream`` | ``auto``: llada, or dream by config)."""
        from transformers import AutoTokenizer

        folder = hf_folder(path)
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if kind == "auto":
            kind = "dream" if is_dream(raw) else "llada"
        if kind not in KINDS:
            raise ValueError(f"kind must be 'auto' or one of {KINDS}, got {kind!r}")
        trust = trust_remote_code and bool(raw.get("auto_map"))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust)
        src = Source(folder, raw, tokenizer, mask_token_id, dtype, seed, trust_remote_code)
        loaded = pick_loader(kind, src)(src)  # one loader per kind (agents.hf.loaders)
        model = HFDenoiser(loaded.backbone, kind, loaded.mask, len(tokenizer), published_config=loaded.published)
        return cls(model, tokenizer, decoding, seed=seed, use_chat_template=use_chat_template, remote_code=loaded.remote)

    # ----- inputs (text only) -----------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        """The prompt's token ids (chat template with one user turn when the tokenizer has one); no image."""
        if self.use_chat_template:
            chat = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(chat, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def layout(self, task: str) -> ResponseLayout:
        """A text-only response of the task's text length (ImageEdit answers in text)."""
        return ResponseLayout(self.decoding.text_length(task), 0)

    def pixel_values(self, observations: list[dict]) -> torch.Tensor:
        """Placeholder images (N, 3, 1, 1): the backbone is text only."""
        return torch.zeros(len(observations), 3, 1, 1)

    def sft_rollouts(self, observations: list[dict], targets: list[str | dict]) -> Rollouts:
        """SFT rows of the reference ``targets``; warns once when equal prompts get different targets (no image is seen)."""
        if self.model.config.num_patches == 0 and not getattr(self, "_warned_blind", False):
            seen: dict[Any, Any] = {}
            for obs, target in zip(observations, targets):
                text = target["text"] if isinstance(target, dict) else target
                if seen.setdefault(obs.get("prompt"), text) != text:
                    self._warned_blind = True
                    warnings.warn(
                        f"{type(self).__name__} is text only and sees no image, but observations with the same prompt "
                        f"text get different reference solutions (e.g. {seen[obs.get('prompt')]!r} and {text!r}): the "
                        "answer is only in the image (every VisualMath prompt of a family is the same sentence), so "
                        "this backbone cannot learn them apart; train a multimodal backbone (hf-vlm-dllm:DIR) instead",
                        stacklevel=2,
                    )
                    break
        return super().sft_rollouts(observations, targets)

    def decoding_settings(self) -> dict[str, Any]:
        """Decoding settings plus the backbone kind, logits shift and mask id."""
        m = self.model
        return {**asdict(self.decoding), "backbone": m.kind, "logits_shift": m.logits_shift, "mask_token_id": m.config.mask_token_id}

    # ----- persistence ----------------------------------------------------------------
    def save_pretrained(self, path: str) -> None:
        """The backbone in its own HF format, the tokenizer and ``policy_config.json``."""
        from agents.hf.lora import lora_meta, save_backbone
        from agents.hf.precision import save_dtype, save_master

        os.makedirs(path, exist_ok=True)
        dtype = save_dtype(self.model)  # TrainConfig.save_dtype (agents.hf.precision); None: as held
        save_backbone(self.model.backbone, path, dtype)  # with LoRA: base weights + adapter/ (agents.hf.lora)
        save_master(self.model, path, dtype)  # trainable weights held finer than dtype: kept exactly for resume
        if self.model.published_config is not None and self.model.kind == "dream":  # native Dream: its published config.json
            write_dream_config(self.model.backbone, self.model.published_config, path, dtype)
        self.tokenizer.save_pretrained(path)
        meta = {"format": FORMAT, "version": 1, "kind": self.model.kind, "logits_shift": self.model.logits_shift,
                "mask_token_id": self.model.config.mask_token_id, "remote_code": self.remote_code,
                "use_chat_template": self.use_chat_template, "decoding": asdict(self.decoding),
                "codec": self.codec.to_dict(), "seed": self.seed, "lora": lora_meta(self.model.backbone)}  # fmt: skip
        with open(os.path.join(path, POLICY_CONFIG), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, trust_remote_code: bool = False,
                        **decoding_overrides: Any) -> HFDiffusionPolicy:  # fmt: skip
        """Rebuild a policy written by :meth:`save_pretrained` (remote code again needs ``trust_remote_code=True``)."""
        meta, decoding = read_policy_meta(path, "HFDiffusionPolicy", FORMAT, decoding_overrides)
        policy = cls.from_hf(path, meta["kind"], trust_remote_code=trust_remote_code, seed=int(meta.get("seed", 0)),
                             mask_token_id=meta.get("mask_token_id"), decoding=decoding,
                             use_chat_template=meta.get("use_chat_template"))  # fmt: skip
        from agents.hf.lora import load_adapter
        from agents.hf.precision import load_master

        load_adapter(policy, path, meta.get("lora"))
        load_master(policy.model, path)
        if device is not None:
            policy.model.to(device)
        return policy
