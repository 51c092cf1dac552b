"""agents.hf.prompts.image_turn_ids: one user turn [image, text], also through a text-only chat template (LLaDA-V's)."""

from __future__ import annotations

from agents.hf.prompts import image_turn_ids
from tiny_hf import build_tokenizer

TEXT_ONLY = "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"


def test_a_text_only_template_gets_the_llava_string_turn():
    tok = build_tokenizer(chat_template=True)
    tok.chat_template = TEXT_ONLY
    ids = image_turn_ids(tok, tok, "<image>", "add 2 and 3", use_chat_template=True)
    assert tok.decode(ids) == "<|user|><image>\nadd 2 and 3<|end|><|bot|>"
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 1


def test_a_template_that_renders_the_image_part_is_used_as_it_is():
    tok = build_tokenizer(chat_template=True)  # renders {"type": "image"} as <image>
    ids = image_turn_ids(tok, tok, "<image>", "add 2 and 3", use_chat_template=True)
    assert tok.decode(ids) == "user: <image>add 2 and 3\nassistant: "
