"""Prompt ids of one user turn [image, text] for the HF backbones that see the image (docs/design.md, "Layers").

:func:`image_turn_ids` renders the turn with the chat template when the policy uses one (a
text-only template, which prints the [image, text] content list as it is -- LLaDA's, which
LLaDA-V uses -- gets LLaVA's string turn ``IMAGE_TOKEN\\nTEXT``; without a template
``IMAGE_TOKEN\\nTEXT`` with the tokenizer's special tokens) and tokenizes it; each backbone then
expands the image token its own way (``HFVLMDiffusionPolicy``: ``num_patches`` placeholders;
``DGemmaPolicy``: ``<boi>``, placeholders, ``<eoi>``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["image_turn_ids"]


def image_turn_ids(tokenizer: Any, template_owner: Any, image_token: str, text: str, use_chat_template: bool) -> list[int]:
    """Token ids of one user turn [image, ``text``] (any ``image_token`` in ``text`` removed first)."""
    clean = text.replace(image_token, "")
    if use_chat_template:
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": clean}]}]
        rendered = template_owner.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        if "{'type': 'image'}" in rendered:  # a text-only template printed the list (LLaDA's, which LLaDA-V uses)
            turn = [{"role": "user", "content": f"{image_token}\n{clean}"}]
            rendered = template_owner.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(f"{image_token}\n{clean}", add_special_tokens=True)["input_ids"])
