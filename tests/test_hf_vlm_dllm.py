"""agents.hf.vlm: a LLaVA-style HF VLM trained as a masked-diffusion policy that sees the image (hf-vlm-dllm:DIR)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import lavida_envs  # noqa: F401  (registers the env ids)
from agents import check_policy
from agents.diffusion.policy import DecodingConfig
from agents.hf.vlm import HFVLMDiffusionPolicy
from agents.losses import sft_loss
from agents.sft import reference_action
from agents.train_batch import likelihood
from tiny_hf import CHAT_TEMPLATE, build_tokenizer, save_tiny_causal_lm

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")


def save_llava(path: Path, hidden: int = 16, layers: int = 1, image_size: int = 16, patch: int = 4, seed: int = 0) -> Path:
    """A random LLaVA (1-layer CLIP vision tower + ``layers``-layer Llama) with a PIL CLIP image processor."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = build_tokenizer(chat_template=True)
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=hidden)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)  # fmt: skip
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_llava(tmp_path_factory.mktemp("hf_vlm") / "llava")


@pytest.fixture(scope="module")
def policy(folder) -> HFVLMDiffusionPolicy:
    return HFVLMDiffusionPolicy.from_hf(folder)


def _problems(env_id: str, count: int, split: str = "test") -> tuple[list[dict], list]:
    env = gym.make(env_id, split=split, difficulty=1, image_size=64)
    observations, targets = [], []
    for index in range(count):
        obs, info = env.reset(options={"index": index})
        observations.append(obs)
        targets.append(reference_action(env, info))
    return observations, targets


def test_prompt_expands_the_image_token_to_the_vision_towers_patches(policy):
    (obs,), _ = _problems("LaViDa/VisualMath-v0", 1)
    ids = policy.prompt_ids(obs)
    image = policy.ids.image
    assert policy.model.config.num_patches == 16  # (16 px / 4 px patches)^2, CLS dropped ("default")
    first = ids.index(image)
    assert ids[first : first + 16] == [image] * 16 and ids.count(image) == 16  # one contiguous run, where the template puts it
    assert policy.tokenizer.decode(ids[:first]) == "user: "
    assert policy.pixel_values([obs]).shape == (1, 3, 16, 16)
    hostile = dict(obs, prompt=obs["prompt"] + " <image><image>")  # the token's text in a prompt adds no placeholder
    assert policy.prompt_ids(hostile).count(image) == 16


def test_features_go_where_llavas_own_forward_puts_them_and_attention_is_bidirectional(policy):
    observations, _ = _problems("LaViDa/Grounding-v0", 2)
    ids = torch.tensor([policy.prompt_ids(o) + [policy.ids.mask] * 4 for o in observations[:1]] * 2)
    ids = torch.cat([ids, torch.tensor([[7, 8, 9, 10]] * 2)], 1)
    pixels = policy.pixel_values(observations)
    ours = policy.model(ids, pixels).logits
    mask = torch.zeros(2, 1, ids.shape[1], ids.shape[1])  # all keys attended, no causal mask
    theirs = policy.model.backbone(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
    assert torch.allclose(ours[..., : theirs.shape[-1]], theirs, atol=1e-5)
    later = ids.clone()
    later[:, -1] = 11
    assert not torch.allclose(policy.model(later, pixels).logits[:, 0], ours[:, 0])  # a later token changes position 0


def test_passes_check_policy_on_visual_math_and_grounding(policy):
    assert check_policy(policy, env_ids=["LaViDa/VisualMath-v0", "LaViDa/Grounding-v0"]) == []


def test_the_image_changes_the_logits_at_response_positions(policy):
    observations, _ = _problems("LaViDa/VisualMath-v0", 2)
    assert not np.array_equal(observations[0]["image"], observations[1]["image"])
    policy.decoding = DecodingConfig(gen_length=8, steps=8, block_length=8, task_gen_length={})
    r = policy.rollout(observations[:1], 1, generator=torch.Generator().manual_seed(0))
    x = r.sequences.clone()
    x[r.response_mask] = policy.ids.mask
    with torch.no_grad():
        own = policy.model(x, policy.pixel_values(observations[:1]), r.attention_mask).logits[r.response_mask]
        same = policy.model(x, policy.pixel_values(observations[:1]), r.attention_mask).logits[r.response_mask]
        other = policy.model(x, policy.pixel_values(observations[1:]), r.attention_mask).logits[r.response_mask]
    assert torch.equal(own, same)
    assert (own - other).abs().max() > 1e-4 * own.abs().max()
    swapped = copy.copy(r)
    swapped.pixel_values = policy.pixel_values(observations[1:])
    with torch.no_grad():  # same masks (mask seed 0), bit-identical computation except for the image
        assert torch.equal(policy.log_likelihood(r, "complementary", 0), policy.log_likelihood(copy.copy(r), "complementary", 0))
        assert not torch.equal(policy.log_likelihood(r, "complementary", 0), policy.log_likelihood(swapped, "complementary", 0))
    policy.model.zero_grad(set_to_none=True)
    policy.log_likelihood(r, "complementary", 0).sum().backward()  # the gradient reaches the projector and the vision tower
    llava = policy.model.backbone.model
    for part in (llava.multi_modal_projector, llava.vision_tower):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__
    policy.model.zero_grad(set_to_none=True)


def test_sft_learns_two_solutions_that_only_the_image_tells_apart(tmp_path):
    """Same prompt, black vs white image, two different reference solutions: exact recall needs the image pathway."""
    policy = HFVLMDiffusionPolicy.from_hf(save_llava(tmp_path / "sft", hidden=32, layers=2, image_size=32, patch=8))
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1, image_size=64)
    observations, targets, index = [], [], 0
    while len(targets) < 2:
        obs, info = env.reset(options={"index": index})
        index += 1
        if reference_action(env, info) not in targets:
            targets.append(reference_action(env, info))
            observations.append(dict(obs, image=np.full((64, 64, 3), 255 * len(observations), np.uint8)))
    assert observations[0]["prompt"] == observations[1]["prompt"]
    policy.decoding = DecodingConfig(gen_length=28, steps=28, block_length=28, task_gen_length={})
    rows = policy.sft_rollouts(observations, targets)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=5e-3, weight_decay=0.0)
    losses, recall = [], 0
    for step in range(160):
        result = likelihood(policy, rows, "complementary", step)
        loss = sft_loss(result.loglik, result.scored.sum(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 19:
            texts = policy.rollout(observations, 1, generator=torch.Generator().manual_seed(0)).texts
            recall = sum(t == target for t, target in zip(texts, targets))
            if recall == 2:
                break
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert recall == 2, (texts, targets, losses[-5:])


def test_two_rl_steps_through_lavida_train_then_lavida_eval_on_the_checkpoint(folder, tmp_path):
    from agents.metrics_log import MetricsLog
    from agents.trainer import main as train
    from evaluation.evaluate import main as evaluate

    out = tmp_path / "run"
    assert train(["--config", TINY, "--policy", f"hf-vlm-dllm:{folder}", "--output_dir", str(out), "--max_steps", "2"]) == 0
    rl = [r for r in MetricsLog.read(str(out / "metrics.jsonl")) if "reward" in r]
    assert len(rl) == 2 and all(r["skipped"] == 0.0 and np.isfinite(r["loss"]) for r in rl)
    meta = json.loads((out / "policy_config.json").read_text())
    assert meta["format"] == "lavida-hf-vlm-diffusion" and meta["num_patches"] == 16
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"  # the model's own HF format
    eval_out = tmp_path / "eval"
    assert evaluate(["--policy", str(out), "--env", "LaViDa/Grounding-v0", "--episodes", "2", "--out", str(eval_out),
                     "--no-progress", "--policy-kwargs", "gen_length=16,steps=4,block_length=16"]) == 0  # fmt: skip
    results = json.loads((eval_out / "results.json").read_text())
    assert results["n"] == 2 and results["policy"]["decoding"]["backbone"] == "vlm"


def test_a_lora_adapter_round_trips_through_save_and_load_and_merges(folder, tmp_path):
    pytest.importorskip("peft")
    from agents.hf.lora import LoraSettings, apply_lora

    policy = HFVLMDiffusionPolicy.from_hf(folder)
    apply_lora(policy, LoraSettings(2, 4.0))
    with torch.no_grad():  # move the adapter off its zero start, so a lost adapter shows
        for name, param in policy.model.backbone.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    observations, _ = _problems("LaViDa/Grounding-v0", 1)
    policy.decoding = DecodingConfig(gen_length=8, steps=4, block_length=8, task_gen_length={})
    r = policy.rollout(observations, 1, generator=torch.Generator().manual_seed(0))
    policy.save_pretrained(str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    loaded = HFVLMDiffusionPolicy.from_pretrained(str(tmp_path / "lora"))
    loaded.decoding = policy.decoding
    with torch.no_grad():
        assert torch.allclose(loaded.log_likelihood(r, "complementary", 0), policy.log_likelihood(r, "complementary", 0), atol=1e-5)
        base = HFVLMDiffusionPolicy.from_hf(folder).log_likelihood(r, "complementary", 0)
        assert not torch.allclose(loaded.log_likelihood(r, "complementary", 0), base, atol=1e-3)
    from agents.hf.lora import has_adapter
    from agents.hf.lora.__main__ import main as lora_main

    assert lora_main(["merge", str(tmp_path / "lora"), str(tmp_path / "merged")]) == 0  # the class from policy_config.json
    merged = HFVLMDiffusionPolicy.from_pretrained(str(tmp_path / "merged"))
    merged.decoding = policy.decoding
    assert not has_adapter(merged.model.backbone) and not (tmp_path / "merged" / "adapter").exists()
    with torch.no_grad():
        assert torch.allclose(merged.log_likelihood(r, "complementary", 0), loaded.log_likelihood(r, "complementary", 0), atol=1e-4)


def test_bad_folders_get_errors_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match="not a vision-language model.*hf-a2d:"):
        HFVLMDiffusionPolicy.from_hf(save_tiny_causal_lm(tmp_path / "causal"))
    with pytest.raises(ValueError, match="no config.json"):
        HFVLMDiffusionPolicy.from_hf(tmp_path)
    with pytest.raises(ValueError, match="needs a directory after 'hf-vlm-dllm:'"):
        from agents.specs import trainable_policy

        trainable_policy("hf-vlm-dllm:")
