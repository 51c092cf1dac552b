"""Image processing of hf-vlm-dllm: folders (issue 21 item 8): a default normalisation only without a preprocessor config."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from agents.hf.vlm import CLIP_MEAN, CLIP_STD, HFVLMDiffusionPolicy
from test_hf_vlm_dllm import save_llava
from tiny_hf import CHAT_TEMPLATE, build_tokenizer

torch.set_num_threads(1)
WHITE = [{"image": np.full((20, 20, 3), 255, np.uint8), "prompt": "x"}]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return save_llava(tmp_path_factory.mktemp("vlm_images") / "llava")


def test_a_preprocessor_config_that_does_not_load_is_named(llava, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(llava, bad)
    raw = json.loads((bad / "processor_config.json").read_text())  # transformers 5 keeps the image processor here
    (bad / "processor_config.json").write_text(json.dumps({**raw, "image_processor": {"image_processor_type": "NoSuch"}}))
    with pytest.raises(ValueError, match=r"processor_config.json describes the folder's image processor, but it did not "
                                         r"load \(AutoProcessor: ValueError: Unrecognized image processor"):  # fmt: skip
        HFVLMDiffusionPolicy.from_hf(bad)
    (bad / "processor_config.json").unlink()
    (bad / "preprocessor_config.json").write_text('{"image_processor_type": "CLIPImageProcessor", ')  # cut off
    with pytest.raises(ValueError, match=r"preprocessor_config.json describes the folder's image processor"):
        HFVLMDiffusionPolicy.from_hf(bad)


def test_without_a_preprocessor_config_a_clip_tower_gets_clip_normalisation(llava, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(llava, bare, ignore=shutil.ignore_patterns("preprocessor_config.json", "processor_config.json"))
    policy = HFVLMDiffusionPolicy.from_hf(bare)
    assert policy.image_processor is None
    want = (1.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    assert torch.allclose(policy.pixel_values(WHITE)[0, :, 0, 0], torch.tensor(want, dtype=torch.float32), atol=1e-5)


def test_without_a_preprocessor_config_a_siglip_tower_gets_mean_std_one_half(tmp_path):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    tok = build_tokenizer(chat_template=True)
    tok.chat_template = CHAT_TEMPLATE
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=4)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="full", vision_feature_layer=-1)  # fmt: skip
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path / "siglip")
    tok.save_pretrained(tmp_path / "siglip")
    policy = HFVLMDiffusionPolicy.from_hf(tmp_path / "siglip")
    assert tuple(policy.image_processor.image_mean) == (0.5, 0.5, 0.5) and policy.model.config.image_size == 16
    white = policy.pixel_values(WHITE)
    assert white.shape == (1, 3, 16, 16) and torch.allclose(white, torch.ones_like(white), atol=1e-5)  # (1 - 0.5) / 0.5
