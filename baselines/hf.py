"""Hugging Face policy adapters: run a local HF model on our envs (docs/design.md, "Public API" and "Evaluation").

Two adapters, each a :class:`agents.policy.Policy` (``act(observations, num_samples=1) ->
list[list[action]]``) that loads ONLY from a local directory (``local_files_only=True``):

* :class:`~baselines.hf_causal.HFCausalLMPolicy` (spec ``hf:<dir>``) -- an
  ``AutoModelForCausalLM`` + tokenizer; text prompt only (the image is ignored and a warning
  says so once); generation through ``generate``.
* :class:`~baselines.hf_vlm.HFVLMPolicy` (``hf-vlm:<dir>``) -- ``AutoProcessor`` +
  ``AutoModelForImageTextToText``; the observation image and prompt go through the
  processor's chat template when it has one, else a plain "<image token>\\nprompt".

Masked-diffusion LMs (``hf-dllm:<dir>`` and the other ``hf-*:`` backbone specs) are not adapters
here: they evaluate as the trainable :class:`agents.hf.policy.HFDiffusionPolicy` they train as
(:func:`agents.specs.trainable_policy`).

Common behaviour: the action is the decoded response text (for edit prompts a bare text
action, whose image part the env scores 0). Observations are generated one at a time
(``num_samples`` rows together) unless ``batch_prompts=True``, so results do not depend on
how the evaluator batches; sampling (``temperature > 0``) is seeded per
``(seed, observation content)``. At ``temperature == 0`` decoding is greedy and the
``num_samples`` samples are identical. ``decoding_settings()`` returns what to record with
results. A missing directory raises ``FileNotFoundError`` and a model of the wrong kind
``ValueError``, both naming the path, what was expected and the spec to use instead; a
masked-diffusion LM (LLaDA-style: a known diffusion ``model_type``, remote code with a
``mask_token_id`` -- both read before any weights load -- or a loaded model class without
``generate``) given to ``hf:``/``hf-vlm:`` is refused with a ``ValueError`` pointing to
``hf-dllm:``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from lavida_envs._lazy import lazy_getattr

__all__ = [
    "HFCausalLMPolicy",
    "HFVLMPolicy",
    "chat_template_flag",
    "check_model_kind",
    "diffusion_lm_hint",
    "load_local_config",
    "local_model_dir",
    "observation_seed",
    "resolve_device",
    "seeded_torch",
]

_CLASSES = {
    "HFCausalLMPolicy": "baselines.hf_causal",
    "HFVLMPolicy": "baselines.hf_vlm",
}
#: kind -> (auto-mapping attribute in transformers.models.auto.modeling_auto, Auto class, spec prefix)
KINDS: dict[str, tuple[str, str, str]] = {
    "causal": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM", "hf:"),
    "vlm": ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "AutoModelForImageTextToText", "hf-vlm:"),
    "masked": ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM", "hf-dllm:"),
}
_EXPECTED = {
    "causal": "a Hugging Face causal LM (AutoModelForCausalLM: config.json, weights, tokenizer)",
    "vlm": "a Hugging Face vision-language model (AutoModelForImageTextToText + AutoProcessor files)",
    "masked": "a Hugging Face masked-diffusion LM (AutoModelForMaskedLM, or remote code such as LLaDA "
    "loaded with trust_remote_code=True)",
}


__getattr__ = lazy_getattr(__name__, _CLASSES)


def local_model_dir(path: str | os.PathLike, kind: str) -> Path:
    """``path`` as a Path if it is a local directory with a ``config.json``; else FileNotFoundError."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(path)!r} is not a local directory; expected {_EXPECTED[kind]} saved with save_pretrained "
            "(models are never downloaded: download it yourself and pass the folder)"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no config.json; expected {_EXPECTED[kind]}")
    return folder


def load_local_config(folder: Path, kind: str, trust_remote_code: bool = False) -> Any:
    """``AutoConfig`` of a local model folder, with errors that say what was expected."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        hint = "" if trust_remote_code else " (a remote-code model needs trust_remote_code=True)"
        raise ValueError(
            f"cannot read the config in {str(folder)!r}{hint}; expected {_EXPECTED[kind]}: {exc}"
        ) from None


def model_kinds(config: Any) -> list[str]:
    """The adapter kinds whose Auto class knows ``config`` (by model type or ``auto_map``)."""
    from transformers.models.auto import modeling_auto

    auto_map = getattr(config, "auto_map", None) or {}
    kinds = []
    for kind, (mapping, auto_class, _) in KINDS.items():
        if config.model_type in getattr(modeling_auto, mapping) or auto_class in auto_map:
            kinds.append(kind)
    return kinds


#: ``model_type`` values of masked-diffusion LMs (remote code), lower-cased
DIFFUSION_MODEL_TYPES = frozenset({"llada", "llada_moe", "lladamoe", "dream", "mmada", "lavida"})


def diffusion_lm_hint(folder: Path) -> str | None:
    """Why ``folder/config.json`` looks like a masked-diffusion LM (LLaDA-style), or None.

    Read as plain JSON, so a remote-code config is recognised without running its code: a
    known diffusion ``model_type`` or a ``mask_token_id`` in a config whose ``auto_map``
    names remote classes.
    """
    import json

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    model_type = str(raw.get("model_type", "")).lower()
    if model_type in DIFFUSION_MODEL_TYPES:
        return f"model_type {raw.get('model_type')!r}"
    if raw.get("mask_token_id") is not None and raw.get("auto_map"):
        return f"remote code with mask_token_id {raw.get('mask_token_id')!r}"
    return None


def refuse_diffusion_lm(folder: Path, spec_prefix: str, why: str) -> None:
    """Raise the ValueError that sends a diffusion-LM folder given to ``spec_prefix`` to ``hf-dllm:``."""
    raise ValueError(
        f"{str(folder)!r} holds a masked-diffusion LM ({why}), which {spec_prefix}<dir> cannot run (it decodes "
        f"with generate()); use hf-dllm:{folder} (our diffusion sampler), adding --policy-kwargs "
        "trust_remote_code=true for a remote-code checkpoint such as LLaDA"
    )


def check_model_kind(config: Any, folder: Path, kind: str) -> None:
    """Raise ValueError (naming the path, the model type found and the right spec) unless ``config`` is ``kind``."""
    kinds = model_kinds(config)
    encoder_only = "masked" in kinds and not getattr(config, "is_decoder", False)
    ok = kind in kinds and not (kind == "causal" and encoder_only)
    if ok:
        return
    better = [KINDS[k][2] for k in kinds if k != kind and not (k == "causal" and encoder_only)]
    hint = f"; it looks like a model for {' or '.join(sorted(set(better)))}<dir>" if better else ""
    raise ValueError(
        f"{str(folder)!r} holds a model of type {config.model_type!r} ({type(config).__name__}); "
        f"expected {_EXPECTED[kind]}{hint}"
    )


def chat_template_flag(owner: Any, requested: bool | None, folder: Path, what: str) -> bool:
    """Whether to use ``owner``'s chat template: ``requested``, or whether it has one (None)."""
    has_template = bool(getattr(owner, "chat_template", None))
    if requested and not has_template:
        raise ValueError(f"use_chat_template=True but the {what} in {str(folder)!r} has no chat template")
    return has_template if requested is None else bool(requested)


def resolve_device(device: str | None) -> Any:
    """``torch.device(device)``, or CUDA when available and ``device`` is None, else CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def observation_seed(seed: int, observation: dict) -> int:
    """A 63-bit seed fixed by ``seed`` and the observation's content."""
    from baselines.simple import observation_key
    from lavida_envs.base import stable_seed

    return stable_seed("hf-policy", int(seed), observation_key(observation)) % (2**63 - 1)


@contextlib.contextmanager
def seeded_torch(seed: int, device: Any) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to ``seed``; restore the RNG afterwards."""
    import torch

    devices = [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def chunks(items: list, together: bool) -> Iterator[list]:
    """All items at once (``together``) or one at a time."""
    if together:
        if items:
            yield items
        return
    for item in items:
        yield [item]


def check_samples(num_samples: Any) -> int:
    """``num_samples`` as an int >= 1, else ValueError."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return num_samples


class GenerateAdapter:
    """Shared loading and ``act`` of the ``generate``-based adapters (causal LM, VLM).

    Subclasses set ``kind`` and implement :meth:`load_processing` (tokenizer/processor),
    :meth:`auto_model_class` and :meth:`model_inputs`.
    """

    kind: str = "causal"
    template_owner_name: str = "tokenizer"

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
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, float(temperature), float(top_p)
        self.gen_kwargs = dict(gen_kwargs)
        self.seed, self.batch_prompts = int(seed), bool(batch_prompts)
        self.path = local_model_dir(path, self.kind)
        prefix = KINDS[self.kind][2]
        why = diffusion_lm_hint(self.path)
        if why:
            refuse_diffusion_lm(self.path, prefix, why)
        check_model_kind(load_local_config(self.path, self.kind, trust_remote_code), self.path, self.kind)
        self.device = resolve_device(device)
        owner = self.load_processing(trust_remote_code)
        self.prepare_tokenizer()
        extra = {"dtype": dtype} if dtype is not None else {}
        self.model = self.auto_model_class().from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code, **extra
        ).to(self.device).eval()
        if not callable(getattr(self.model, "generate", None)):
            refuse_diffusion_lm(self.path, prefix, f"its class {type(self.model).__name__} has no generate()")
        self.use_chat_template = chat_template_flag(owner, use_chat_template, self.path, self.template_owner_name)

    def load_processing(self, trust_remote_code: bool) -> Any:
        """Load and set ``self.tokenizer`` (and any processor); return the chat-template owner."""
        raise NotImplementedError

    def auto_model_class(self) -> Any:
        """The transformers Auto class that loads the model."""
        raise NotImplementedError

    def prepare_tokenizer(self) -> None:
        """Left padding (decoder-only generation) and a pad token (the eos token if none)."""
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def model_inputs(self, observations: list[dict]) -> dict[str, Any]:
        """Padded model inputs (tensors) for a list of observations."""
        raise NotImplementedError

    def decoding_settings(self) -> dict[str, Any]:
        """The generation settings, for results files."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "batch_prompts": self.batch_prompts,
            **{k: v for k, v in self.gen_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[str]]:
        """``num_samples`` decoded responses (text actions) per observation."""
        import torch

        check_samples(num_samples)
        sample = self.temperature > 0
        out: list[list[str]] = []
        for group in chunks(list(observations), self.batch_prompts):
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in self.model_inputs(group).items()}
            pad = self.tokenizer.pad_token_id
            kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=sample, pad_token_id=pad)
            if sample:
                kwargs.update(temperature=self.temperature, top_p=self.top_p, num_return_sequences=num_samples)
            kwargs.update(self.gen_kwargs)
            with torch.no_grad(), seeded_torch(observation_seed(self.seed, group[0]), self.device):
                sequences = self.model.generate(**inputs, **kwargs)
            new = sequences[:, inputs["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            per_obs = num_samples if sample else 1
            for i in range(len(group)):
                row = texts[i * per_obs : (i + 1) * per_obs]
                out.append(row if sample else row * num_samples)
        return out
