"""``HFDiffusionLMPolicy`` (spec ``hf-dllm:<dir>``): a local Hugging Face masked-diffusion LM.

Model: any bidirectional masked LM whose logits at position ``i`` predict the token AT ``i``
(LLaDA-style, not shifted): a model type ``AutoModelForMaskedLM`` knows (BERT, RoBERTa,
ModernBERT, ...), or a remote-code checkpoint such as LLaDA (``GSAI-ML/LLaDA-8B-Instruct``
downloaded to a folder) loaded through ``AutoModel`` with ``trust_remote_code=True`` (opt-in;
never the default). The mask token id is ``mask_token_id=`` if given, else the config's
``mask_token_id`` (LLaDA: 126336), else the tokenizer's mask token.

Prompt: the tokenizer's chat template (one user turn, generation prompt) when it has one and
``use_chat_template`` is not False, else the plain prompt with the tokenizer's special tokens;
the image is ignored (warned once). Sampling: :func:`agents.diffusion.sampler.sample` with
LLaDA's settings -- ``gen_length``, ``steps``, ``block_length`` (fitted by
:meth:`agents.diffusion.policy.DecodingConfig.plan`), ``temperature``, ``remasking``,
``threshold`` -- one observation at a time (``num_samples`` rows together, a
``torch.Generator`` seeded per ``(seed, observation content)``). Output: the response up to
its first eos token, decoded without special tokens, as a text action.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from baselines.hf import (
    chat_template_flag,
    check_model_kind,
    check_samples,
    load_local_config,
    local_model_dir,
    model_kinds,
    observation_seed,
    resolve_device,
)

__all__ = ["HFDiffusionLMPolicy"]


class HFDiffusionLMPolicy:
    """A local masked-diffusion LM (LLaDA-style) as a text-only policy, decoded by our sampler."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        trust_remote_code: bool = False,
        gen_length: int = 64,
        steps: int = 64,
        block_length: int = 32,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        threshold: float | None = None,
        seed: int = 0,
        device: str | None = None,
        dtype: Any = None,
        mask_token_id: int | None = None,
        use_chat_template: bool | None = None,
        suppress_ids: list[int] | None = None,
    ) -> None:
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        from agents.diffusion.policy import DecodingConfig

        self.decoding = DecodingConfig(
            gen_length=gen_length, steps=steps, block_length=block_length, temperature=temperature,
            remasking=remasking, threshold=threshold,
        ).validate()
        self.path = local_model_dir(path, "masked")
        config = load_local_config(self.path, "masked", trust_remote_code)
        auto_map = getattr(config, "auto_map", None) or {}
        remote = trust_remote_code and "AutoModel" in auto_map and "masked" not in model_kinds(config)
        if not remote:
            check_model_kind(config, self.path, "masked")
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code
        )
        auto = AutoModel if remote else AutoModelForMaskedLM
        extra = {"dtype": dtype} if dtype is not None else {}
        self.model = auto.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code, **extra
        ).to(self.device).eval()
        self.mask_id = self._mask_id(mask_token_id, config)
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "max_sequence_length", None
        )
        self.use_chat_template = chat_template_flag(self.tokenizer, use_chat_template, self.path, "tokenizer")
        self.seed, self.suppress_ids = int(seed), list(suppress_ids or [])
        self._warned_image = False

    def _mask_id(self, explicit: int | None, config: Any) -> int:
        candidates = (
            ("mask_token_id=", explicit),
            ("config.mask_token_id", getattr(config, "mask_token_id", None)),
            ("tokenizer.mask_token_id", self.tokenizer.mask_token_id),
        )
        vocab = getattr(config, "vocab_size", None)
        for source, value in candidates:
            if value is not None:
                if vocab is not None and not 0 <= int(value) < vocab:
                    raise ValueError(
                        f"{source} = {value} is outside the vocabulary of {vocab} tokens in {str(self.path)!r}"
                    )
                return int(value)
        raise ValueError(
            f"no mask token for the diffusion LM in {str(self.path)!r}: its config has no mask_token_id and its "
            "tokenizer no mask token; pass mask_token_id="
        )

    def prompt_ids(self, observation: dict) -> list[int]:
        """Token ids of one observation's prompt (chat-templated or plain)."""
        prompt = str(observation.get("prompt", ""))
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def _model_fn(self, input_ids: Any, attention_mask: Any) -> Any:
        mask = None if attention_mask is None else attention_mask.long()
        out = self.model(input_ids=input_ids, attention_mask=mask)
        return out.logits if hasattr(out, "logits") else out[0]  # (B, L, V)

    def _decode(self, response: list[int]) -> str:
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos in response:
            response = response[: response.index(eos)]
        return self.tokenizer.decode(response, skip_special_tokens=True)

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[str]]:
        """``num_samples`` sampled responses (text actions) per observation."""
        import torch

        from agents.diffusion.sampler import sample

        check_samples(num_samples)
        d = self.decoding
        steps, block = d.plan(d.gen_length)
        rows = num_samples if (d.temperature > 0 or d.remasking == "random") else 1
        out = []
        for obs in observations:
            if obs.get("image") is not None and not self._warned_image:
                warnings.warn(f"HFDiffusionLMPolicy({str(self.path)!r}) is text-only: images are ignored", stacklevel=2)
                self._warned_image = True
            ids = self.prompt_ids(obs)
            if self.max_positions and len(ids) + d.gen_length > self.max_positions:
                raise ValueError(
                    f"prompt ({len(ids)} tokens) + gen_length ({d.gen_length}) exceeds the model's "
                    f"{self.max_positions} positions ({str(self.path)!r}); lower gen_length"
                )
            prompt = torch.tensor([ids] * rows, dtype=torch.long, device=self.device)
            generator = torch.Generator(device="cpu").manual_seed(observation_seed(self.seed, obs))
            with torch.no_grad():
                result = sample(
                    self._model_fn, prompt, None, gen_length=d.gen_length, steps=steps, block_length=block,
                    temperature=d.temperature, remasking=d.remasking, threshold=d.threshold, mask_id=self.mask_id,
                    generator=generator, suppress_ids=self.suppress_ids,
                )
            texts = [self._decode(row[len(ids) :].tolist()) for row in result.sequences]
            out.append(texts if rows == num_samples else texts * num_samples)
        return out

    def decoding_settings(self) -> dict[str, Any]:
        """LLaDA decoding settings, mask id and seed, for results files."""
        d = self.decoding
        steps, block = d.plan(d.gen_length)
        return {
            "adapter": "hf-dllm", "gen_length": d.gen_length, "steps": steps, "block_length": block,
            "temperature": d.temperature, "remasking": d.remasking, "threshold": d.threshold,
            "mask_token_id": self.mask_id, "chat_template": self.use_chat_template, "seed": self.seed,
        }

    def __repr__(self) -> str:
        return f"HFDiffusionLMPolicy({str(self.path)!r})"
