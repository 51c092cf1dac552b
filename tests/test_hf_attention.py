"""No silent causal attention: a folder asking for FlashAttention loads with sdpa wherever a 4-D bidirectional mask is needed."""

from __future__ import annotations

import json

import pytest
import torch

from agents.hf.attention import bidirectional_attn_implementation
from agents.hf.policy import HFDiffusionPolicy
from tiny_dllm import save_dream, save_qwen2

torch.set_num_threads(1)


def _ask_for_flash(folder, key="attn_implementation", value="flash_attention_2"):
    raw = json.loads((folder / "config.json").read_text())
    raw[key] = value
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize("kind,save", [("a2d", save_qwen2), ("dream", save_dream)])
@pytest.mark.parametrize("key", ["attn_implementation", "_attn_implementation"])
def test_a_flash_attention_folder_runs_bidirectionally_with_sdpa(tmp_path, kind, save, key):
    folder = _ask_for_flash(save(tmp_path / kind, hidden=32, layers=1), key)
    with pytest.warns(UserWarning, match=rf"{key}: 'flash_attention_2'.*4-D bidirectional mask.*sdpa"):
        policy = HFDiffusionPolicy.from_hf(folder, kind)
    assert policy.model.backbone.config._attn_implementation == "sdpa"
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    y = x.clone()
    y[0, -1] = 11
    with torch.no_grad():  # the last token reaches position 0 (Dream: position 1, whose logits come from 0)
        first = 1 if kind == "dream" else 0
        assert not torch.allclose(policy.model(x).logits[0, first], policy.model(y).logits[0, first])


def test_masked_implementations_are_kept():
    assert bidirectional_attn_implementation({"attn_implementation": "eager"}, "f") == "eager"
    assert bidirectional_attn_implementation({}, "f") is None
    with pytest.warns(UserWarning, match="flex_attention"):
        assert bidirectional_attn_implementation({"_attn_implementation": "flex_attention"}, "f") == "sdpa"
