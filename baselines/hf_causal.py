"""``HFCausalLMPolicy`` (spec ``hf:<dir>``): a local Hugging Face causal LM answering from the prompt text.

Input: the observation's ``prompt`` only -- the image is ignored (a warning says so once per
policy). The prompt goes through the tokenizer's chat template (one user turn, generation
prompt added) when it has one and ``use_chat_template`` is not False, else it is tokenized
as plain text. Output: the decoded new tokens (special tokens skipped) as a text action.
Generation: ``model.generate`` (KV cache), greedy at ``temperature=0`` else sampling with
``temperature``/``top_p``; extra ``generate`` kwargs pass through. See :mod:`baselines.hf`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from baselines.hf import (
    GenerateAdapter,
    chat_template_flag,
    check_model_kind,
    load_local_config,
    local_model_dir,
    resolve_device,
)

__all__ = ["HFCausalLMPolicy"]


class HFCausalLMPolicy(GenerateAdapter):
    """A local ``AutoModelForCausalLM`` as a text-only policy (observation images are ignored)."""

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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(max_new_tokens, temperature, top_p, gen_kwargs)
        self.path = local_model_dir(path, "causal")
        config = load_local_config(self.path, "causal", trust_remote_code)
        check_model_kind(config, self.path, "causal")
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code
        )
        self.prepare_tokenizer()
        extra = {"dtype": dtype} if dtype is not None else {}
        self.model = AutoModelForCausalLM.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code, **extra
        ).to(self.device).eval()
        self.use_chat_template = chat_template_flag(self.tokenizer, use_chat_template, self.path, "tokenizer")
        self.seed, self.batch_prompts = int(seed), bool(batch_prompts)
        self._warned_image = False

    def prompt_text(self, observation: dict) -> str:
        """The text fed to the model for one observation (chat-templated or plain)."""
        prompt = str(observation.get("prompt", ""))
        if not self.use_chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def model_inputs(self, observations: list[dict]) -> dict[str, Any]:
        """Left-padded ``input_ids``/``attention_mask`` of the prompts."""
        if not self._warned_image and any(obs.get("image") is not None for obs in observations):
            warnings.warn(
                f"HFCausalLMPolicy({str(self.path)!r}) is text-only: observation images are ignored",
                stacklevel=3,
            )
            self._warned_image = True
        texts = [self.prompt_text(obs) for obs in observations]
        return dict(
            self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.use_chat_template)
        )

    def decoding_settings(self) -> dict[str, Any]:
        """Generation settings plus the adapter kind, for results files."""
        return {"adapter": "hf", "chat_template": self.use_chat_template, **super().decoding_settings()}

    def __repr__(self) -> str:
        return f"HFCausalLMPolicy({str(self.path)!r})"
