"""``HFCausalLMPolicy`` (spec ``hf:<dir>``): a local Hugging Face causal LM answering from the prompt text.

Input: the observation's ``prompt`` only -- the image is ignored (a warning says so once per
policy). The prompt goes through the tokenizer's chat template (one user turn, generation
prompt added) when it has one and ``use_chat_template`` is not False, else it is tokenized
as plain text. Output: the decoded new tokens (special tokens skipped) as a text action.
Generation: ``model.generate`` (KV cache), greedy at ``temperature=0`` else sampling with
``temperature``/``top_p``; extra ``generate`` kwargs pass through. Constructor options:
:class:`baselines.hf.GenerateAdapter`; behaviour common to the adapters: :mod:`baselines.hf`.
"""

from __future__ import annotations

import warnings
from typing import Any

from baselines.hf import GenerateAdapter

__all__ = ["HFCausalLMPolicy"]


class HFCausalLMPolicy(GenerateAdapter):
    """A local ``AutoModelForCausalLM`` as a text-only policy (observation images are ignored)."""

    kind = "causal"
    _warned_image = False

    def load_processing(self, trust_remote_code: bool) -> Any:
        """The folder's tokenizer (also the chat-template owner)."""
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), local_files_only=True, trust_remote_code=trust_remote_code
        )
        return self.tokenizer

    def auto_model_class(self) -> Any:
        """``AutoModelForCausalLM``."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

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
