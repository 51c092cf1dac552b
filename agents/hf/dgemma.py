"""``DGemmaPolicy``: transformers' DiffusionGemma (uniform-state block diffusion, multimodal) as a trainable policy.

Spec ``hf-dgemma:DIR`` (``hf-dllm:DIR`` selects it too when the folder's ``model_type`` is
``diffusion_gemma``). The folder is a ``DiffusionGemmaForBlockDiffusion`` checkpoint with its
tokenizer and Gemma-4 image processor; nothing runs remote code. The derivation of the
likelihood and the published SFT recipe it matches: docs/uniform_diffusion.md.

* Prompts: one user turn ``[image, text]`` through the tokenizer's chat template (plain text
  otherwise), the image token expanded to ``<boi>`` + ``num_patches`` image tokens + ``<eoi>``;
  the image goes through the folder's image processor (``pixel_values`` of the rollouts: its
  patches with their positions, :func:`agents.hf.dgemma_model.pack_pixels`).
* Responses are text (ImageEdit is answered and scored in text), ``<eos>``-filled to the task's
  text length, cut into canvases of the model's ``canvas_length``.
* ``rollout`` / ``rollout_from``: :func:`agents.hf.dgemma_sample.sample_blocks` (entropy-bound
  commits, uniform re-noising, self-conditioning, the encoder cache reused across steps);
  ``entropy_bound`` (default 0.1, transformers' default) is a policy setting, recorded with the
  decoding settings. Forced suffixes are fixed from the start (``unmask_step`` 0).
* ``log_likelihood_terms``: one encoder pass over the clean rows, then for every pass of
  :func:`agents.diffusion.uniform.uniform_passes` and every block a decoder pass over the
  corrupted canvas (a first no-grad pass gives the self-conditioning logits of the rows drawn
  for it); every response position is scored with weight 1 / passes. SFT rows
  (``extras["reference"]``, set by :meth:`sft_rollouts`) add the encoder's AR co-loss:
  ``ar_weight`` (the recipe's 1.0) times the row's mean next-token log-prob over its attended
  pairs (image placeholders are not targets) at each scored position, so the trainer's
  ``mean_b(-loglik_b / n_b)`` is the recipe's diffusion CE + AR CE.
* Checkpoints: the backbone in its own HF format (LoRA: base + ``adapter/``, :mod:`agents.hf.lora`),
  tokenizer, image processor, ``policy_config.json`` (``format: lavida-hf-dgemma``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from agents.diffusion.codec import PaletteCodec
from agents.diffusion.layout import ResponseLayout, decode_response, task_of
from agents.diffusion.likelihood import ESTIMATORS, LikelihoodEstimate
from agents.diffusion.policy import POLICY_CONFIG, DecodingConfig, read_policy_meta
from agents.diffusion.rows import RowBatch, assemble
from agents.diffusion.tokenizer import SpecialIds
from agents.diffusion.uniform import uniform_passes
from agents.hf.dgemma_config import MODEL_TYPE, check_dgemma_config
from agents.hf.dgemma_model import DGemmaDenoiser, pack_pixels
from agents.hf.dgemma_sample import CanvasState, sample_blocks
from agents.hf.prompts import image_turn_ids
from agents.policy import Rollouts, expand_forced
from agents.token_policy import TokenPolicy

__all__ = ["DEFAULT_DECODING", "FORMAT", "DGemmaPolicy", "is_dgemma_folder"]

FORMAT = "lavida-hf-dgemma"
#: decoding settings a DGemmaPolicy starts from (spec options like gen_length=16 override them)
DEFAULT_DECODING: dict[str, Any] = {"cache": "prefix"}


def is_dgemma_folder(path: str | os.PathLike) -> bool:
    """Whether ``path/config.json`` names a DiffusionGemma model."""
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


class DGemmaPolicy(TokenPolicy):
    """DiffusionGemma as a :class:`agents.policy.TrainablePolicy` (module docstring)."""

    def __init__(self, model: DGemmaDenoiser, tokenizer: Any, image_processor: Any, decoding: DecodingConfig | None = None,
                 seed: int = 0, entropy_bound: float = 0.1, ar_weight: float = 1.0, self_conditioning_p: float = 0.5,
                 use_chat_template: bool | None = None) -> None:  # fmt: skip
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.codec = PaletteCodec()
        self.decoding = (decoding or DecodingConfig(**DEFAULT_DECODING)).validate()
        self.seed, self._prompt_cache = int(seed), {}
        if not entropy_bound > 0:
            raise ValueError(f"entropy_bound must be > 0, got {entropy_bound}")
        if not 0.0 <= self_conditioning_p <= 1.0 or ar_weight < 0:
            raise ValueError(f"self_conditioning_p must be in [0, 1] and ar_weight >= 0, got {self_conditioning_p}, {ar_weight}")
        self.entropy_bound, self.ar_weight, self.self_conditioning_p = float(entropy_bound), float(ar_weight), float(self_conditioning_p)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token (responses end in eos padding)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        c, vocab = model.config, model.config.vocab_size
        self.ids = SpecialIds(pad=pad, eos=eos, mask=pad, unk=pad, image=c.image_token_id, boi=c.boi_token_id,
                              eoi=c.eoi_token_id, code_start=vocab, code_end=vocab)  # fmt: skip
        self.use_chat_template = bool(tokenizer.chat_template) if use_chat_template is None else bool(use_chat_template)
        specials = {c.image_token_id, c.boi_token_id, c.eoi_token_id} | ({pad} if pad != eos else set())
        self._suppress = sorted(specials | set(range(model.vocab_limit, vocab)))

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | os.PathLike, *, seed: int = 0, decoding: DecodingConfig | None = None, dtype: Any = None,
                **settings: Any) -> DGemmaPolicy:  # fmt: skip
        """Load a local DiffusionGemma folder (model, tokenizer, image processor); ``settings``: the __init__ knobs."""
        from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

        from agents.hf.loaders import hf_folder
        from agents.hf.vlm import _load_processing

        folder = hf_folder(path)
        check_dgemma_config(folder)  # errors name config.json and the field (agents.hf.dgemma_config)
        processor, image_processor = _load_processing(folder, False)
        if image_processor is None:
            raise ValueError(f"{str(folder)!r} has no image processor (preprocessor_config.json); save the Gemma-4 image processor there")
        tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        extra = {"dtype": dtype} if dtype is not None else {}
        backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(str(folder), local_files_only=True, **extra)
        probe = image_processor(images=[_pil(np.zeros((32, 32, 3), np.uint8))], return_tensors="pt")
        patches = int(probe["num_soft_tokens_per_image"][0])
        model = DGemmaDenoiser(backbone, len(tokenizer), patches)
        return cls(model, tokenizer, image_processor, decoding, seed=seed, **settings)

    # ----- inputs -----------------------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        """One user turn [image, text]: the image token becomes ``<boi>``, ``num_patches`` image tokens, ``<eoi>``."""
        image_token = self.tokenizer.convert_ids_to_tokens(self.ids.image)
        ids = image_turn_ids(self.tokenizer, self.tokenizer, image_token, text, self.use_chat_template)
        span = [self.ids.boi] + [self.ids.image] * self.model.config.num_patches + [self.ids.eoi]
        if self.ids.image not in ids:
            return span + [t for t in ids if t not in (self.ids.boi, self.ids.eoi)]
        first = ids.index(self.ids.image)
        rest = [t for t in ids[first + 1 :] if t != self.ids.image]
        return [t for t in ids[:first] if t != self.ids.boi] + span + [t for t in rest if t != self.ids.eoi]

    def layout(self, task: str) -> ResponseLayout:
        """A text-only response of the task's text length (ImageEdit answers in text)."""
        return ResponseLayout(self.decoding.text_length(task), 0)

    def pixel_values(self, observations: list[dict]) -> torch.Tensor:
        """(N, P, D + 2): the image processor's patches and patch positions of the observations' images."""
        images = []
        for obs in observations:
            array = np.asarray(obs.get("image"))
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"observation image must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
            images.append(_pil(array))
        if not images:
            return torch.zeros(0, 1, 3)
        out = self.image_processor(images=images, return_tensors="pt")
        counts = [int(c) for c in out["num_soft_tokens_per_image"]]
        if any(c != self.model.config.num_patches for c in counts):
            raise ValueError(f"images give {counts} soft tokens but prompts hold {self.model.config.num_patches}: "
                             "DGemmaPolicy needs square images (every env image is square)")  # fmt: skip
        return pack_pixels(out["pixel_values"], out["image_position_ids"])

    # ----- rollouts ---------------------------------------------------------------------
    def rollout(self, observations: list[dict], num_samples: int = 1, forced: Sequence[str | None] | None = None,
                generator: torch.Generator | None = None) -> Rollouts:  # fmt: skip
        """``num_samples`` responses per observation (observation-major); ``forced``: text suffixes."""
        suffixes = expand_forced(forced, len(observations), num_samples)
        return self._generate(observations, num_samples, [self.suffix_ids(s) for s in suffixes], generator)

    def rollout_from(self, observations: list[dict], parents: Rollouts, step: int, num_samples: int = 1,
                     generator: torch.Generator | None = None) -> Rollouts:  # fmt: skip
        """Continue parent row ``i`` ``num_samples`` times keeping its positions committed at steps <= ``step`` (and forced)."""
        if len(parents) != len(observations) or parents.unmask_step is None or parents.forced_mask is None:
            raise ValueError(f"rollout_from needs one rollout row (with unmask_step and forced_mask) per observation; "
                             f"got {len(parents)} rows for {len(observations)} observations")  # fmt: skip
        suffixes = []
        for i in range(len(observations)):
            forced = parents.response_mask[i] & parents.forced_mask[i]
            suffixes += [parents.sequences[i][forced].tolist() or None] * num_samples
        return self._generate(observations, num_samples, suffixes, generator, parents=parents, step=int(step))

    def _parent_state(self, parents: Rollouts, rows: list[int], length: int, step: int, forced: torch.Tensor) -> CanvasState:
        if int(parents.response_mask[rows[0]].sum()) != length:
            raise ValueError(f"parent row {rows[0]} does not have the {length}-position response layout")
        tokens, record = parents.sequences[rows, -length:], parents.unmask_step[rows, -length:]
        keep = forced | ((record >= 1) & (record <= step))
        return CanvasState(tokens.clone(), keep, torch.where(keep, record, torch.zeros_like(record)))

    @torch.no_grad()
    def _generate(self, observations, num_samples, suffixes, generator, parents=None, step=0) -> Rollouts:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        tasks = [task_of(obs) for obs in observations]
        owner = [i for i in range(len(observations)) for _ in range(num_samples)]
        pixels = self.pixel_values(observations)[owner]
        prompts = [self.prompt_ids(obs) for obs in observations]
        batch = RowBatch(prompts=[prompts[i] for i in owner], layouts=[self.layout(tasks[i]) for i in owner], suffixes=suffixes)
        responses, records, nfe, device = [None] * len(owner), [None] * len(owner), 0, self.device
        was_training = self.model.training
        self.model.eval()
        try:
            for layout, rows in batch.groups().items():
                ids, attention, forced_ids, forced, _, _ = batch.group_inputs(rows, self.ids)
                ids, attention = ids[:, 1:], attention[:, 1:]  # drop the row-tag column (rows.py): no tags here
                state = CanvasState(forced_ids.clone(), forced.clone(), torch.zeros_like(forced_ids))
                if parents is not None:
                    state = self._parent_state(parents, [owner[r] for r in rows], layout.length, step, forced)
                state = CanvasState(state.tokens.to(device), state.committed.to(device), state.record.to(device))
                out, calls = sample_blocks(self.model, ids.to(device), attention.to(device), pixels[rows].to(device), state,
                                           steps=self.decoding.steps, temperature=self.decoding.temperature,
                                           entropy_bound=self.entropy_bound, cache=self.decoding.cache,
                                           suppress=self._suppress, generator=generator, start_step=step if parents else 0)  # fmt: skip
                nfe += calls
                for k, row in enumerate(rows):
                    responses[row], records[row] = out.tokens[k].cpu(), out.record[k].cpu()
        finally:
            self.model.train(was_training)
        decoded = [decode_response(r, batch.layouts[i], self.tokenizer, self.ids, self.codec, 1) for i, r in enumerate(responses)]
        rollouts = assemble(batch, responses, records, self.ids)
        rollouts.prompt_index = torch.tensor(owner, dtype=torch.long)
        rollouts.texts, rollouts.actions = [d[0] for d in decoded], [d[1] for d in decoded]
        rollouts.pixel_values = pixels.cpu()
        rollouts.extras.update(task=[tasks[i] for i in owner], nfe=nfe)
        return rollouts

    def sft_rollouts(self, observations: list[dict], targets: list[str | dict]) -> Rollouts:
        """Reference rows (:func:`agents.sft.build_sft_batch`) marked ``extras["reference"]`` (their likelihood adds the AR co-loss)."""
        rollouts = super().sft_rollouts(observations, targets)
        rollouts.extras["reference"] = [True] * len(rollouts)
        return rollouts

    # ----- likelihood ---------------------------------------------------------------------
    def log_likelihood(self, rollouts: Rollouts, estimator: str = "complementary", mask_seed: int = 0,
                       num_samples: int = 1) -> torch.Tensor:  # fmt: skip
        """Per-row surrogate log-likelihood (B,) with gradients (:meth:`log_likelihood_terms`)."""
        return self.log_likelihood_terms(rollouts, estimator, mask_seed, num_samples).loglik

    def scored_mask(self, rollouts: Rollouts) -> torch.Tensor:
        """(B, L) bool: every response position (the recipe scores the whole canvas, eos fill included)."""
        return rollouts.response_mask.to(torch.bool)

    def log_likelihood_terms(self, rollouts: Rollouts, estimator: str = "complementary", mask_seed: int = 0,
                             num_samples: int = 1, prompt_mask_prob: float = 0.0) -> LikelihoodEstimate:  # fmt: skip
        """The estimate (module docstring; docs/uniform_diffusion.md): ``loglik`` (B,), ``token_logp`` (B, L)."""
        from agents.hf.dgemma_loss import uniform_estimate

        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
        if prompt_mask_prob:
            raise ValueError("DGemmaPolicy never corrupts the prompt (the encoder reads it clean); set prompt_mask_prob: 0")
        scored = self.scored_mask(rollouts)
        passes = uniform_passes(rollouts.sequences, scored, estimator=estimator, mask_seed=mask_seed,
                                vocab_size=self.model.config.vocab_size, num_samples=num_samples,
                                self_conditioning_p=self.self_conditioning_p)  # fmt: skip
        reference = rollouts.extras.get("reference")
        ar = torch.tensor([bool(r) for r in reference]) if isinstance(reference, list) else torch.zeros(len(rollouts), dtype=torch.bool)
        return uniform_estimate(self.model, rollouts, scored, passes, ar & (self.ar_weight > 0), self.ar_weight)

    # ----- settings and persistence ----------------------------------------------------------
    def decoding_settings(self) -> dict[str, Any]:
        """Decoding settings plus the backbone kind, entropy bound, canvas length and training knobs."""
        c = self.model.config
        return {**asdict(self.decoding), "backbone": "dgemma", "entropy_bound": self.entropy_bound,
                "canvas_length": c.canvas_length, "num_patches": c.num_patches, "ar_weight": self.ar_weight,
                "self_conditioning_p": self.self_conditioning_p}  # fmt: skip

    def save_pretrained(self, path: str) -> None:
        """The backbone in its HF format (LoRA: base + adapter/), tokenizer, image processor, ``policy_config.json``."""
        from agents.hf.lora import lora_meta, save_backbone
        from agents.hf.precision import save_dtype, save_master

        os.makedirs(path, exist_ok=True)
        save_backbone(self.model.backbone, path, save_dtype(self.model))  # TrainConfig.save_dtype (agents.hf.precision)
        save_master(self.model, path, save_dtype(self.model))
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        meta = {"format": FORMAT, "version": 1, "kind": "dgemma", "decoding": asdict(self.decoding), "codec": self.codec.to_dict(),
                "seed": self.seed, "entropy_bound": self.entropy_bound, "ar_weight": self.ar_weight,
                "self_conditioning_p": self.self_conditioning_p, "use_chat_template": self.use_chat_template,
                "num_patches": self.model.config.num_patches, "lora": lora_meta(self.model.backbone)}  # fmt: skip
        with open(os.path.join(path, POLICY_CONFIG), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, **decoding_overrides: Any) -> DGemmaPolicy:
        """Rebuild a policy written by :meth:`save_pretrained` (``decoding_overrides``: e.g. ``temperature=1.0``)."""
        from agents.hf.lora import load_adapter

        decoding_overrides.pop("trust_remote_code", None)  # nothing here runs remote code
        meta, decoding = read_policy_meta(path, "DGemmaPolicy", FORMAT, decoding_overrides)
        knobs = {k: meta[k] for k in ("entropy_bound", "ar_weight", "self_conditioning_p", "use_chat_template") if k in meta}
        policy = cls.from_hf(path, seed=int(meta.get("seed", 0)), decoding=decoding, **knobs)
        load_adapter(policy, path, meta.get("lora"))
        from agents.hf.precision import load_master

        load_master(policy.model, path)
        if device is not None:
            policy.model.to(device)
        return policy


def _pil(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array)
