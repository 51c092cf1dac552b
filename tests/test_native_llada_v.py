"""Native LLaDA-V (agents.hf.llada_v): equal to the published code's logits, saved in LLaDA-V's layout, KV-cached exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from agents.diffusion.policy import DecodingConfig
from agents.hf.llada_v import LLaDAVModel
from agents.hf.vlm import HFVLMDiffusionPolicy
from agents.policy_check import check_policy
from agents.specs import trainable_policy
from tiny_hf import build_tokenizer

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "native" / "llada_v"


def llada_v_folder(path: Path, layers: int | None = None) -> Path:
    """The published-code fixture (config.json + model.safetensors, no code file) plus the test tokenizer;
    ``layers``: keep only the first LM layers."""
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns("expected.safetensors", "fixture.json"))
    build_tokenizer(chat_template=True).save_pretrained(path)
    if layers is not None:
        raw = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": layers}))
        weights = load_file(str(path / "model.safetensors"))
        keep = {k: v for k, v in weights.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
        save_file(keep, str(path / "model.safetensors"))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return llada_v_folder(tmp_path_factory.mktemp("llada_v") / "llada_v")


def _decoding(cache: str) -> DecodingConfig:
    return DecodingConfig(gen_length=8, steps=4, block_length=4, cache=cache, task_gen_length={"grounding": 8, "image_edit": 8})


def _expanded(policy: HFVLMDiffusionPolicy, ids: torch.Tensor) -> torch.Tensor:
    """The published inputs (image marker -200 once per row) with the marker expanded to the placeholders."""
    p, image = policy.model.config.num_patches, policy.ids.image
    rows = [r[: r.index(-200)] + [image] * p + r[r.index(-200) + 1 :] for r in ids.tolist()]
    return torch.tensor(rows)


def test_native_llada_v_logits_equal_the_published_code(folder):
    # hf-dllm: on a folder with model_type llava_llada selects the VLM policy, with no trust flag and no code file
    policy = trainable_policy(f"hf-dllm:{folder}")
    assert isinstance(policy, HFVLMDiffusionPolicy) and isinstance(policy.model.backbone, LLaDAVModel)
    assert not policy.remote_code and not list(folder.glob("*.py"))
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    assert policy.model.config.num_patches == int(expected["image_tokens"]) == 729 + 27 * 28  # base grid + tile with newlines
    ids = _expanded(policy, expected["input_ids"])
    want = expected["text_logits"]
    assert int((ids == policy.ids.mask).sum()) >= 14 and want.abs().max() > 0.5  # masked spans; logits not trivially small
    with torch.no_grad():
        got = policy.model.eval()(ids, pixel_values=expected["pixel_values"]).logits
    text = ids != policy.ids.image
    got = got[text].view(2, -1, got.shape[-1])
    limit = policy.model.vocab_limit
    assert (got[..., :limit] - want[..., :limit]).abs().max() < 1e-5 and bool((got[..., limit:] < -1e8).all())


def test_native_llada_v_saves_in_the_published_layout(folder, tmp_path):
    policy = HFVLMDiffusionPolicy.from_hf(folder)
    policy.save_pretrained(str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved == json.loads((folder / "config.json").read_text())  # every published key and value
    assert not list((tmp_path / "ckpt").glob("*.py"))
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f, \
         safe_open(str(folder / "model.safetensors"), "pt") as g:  # fmt: skip
        assert set(f.keys()) == set(g.keys()) and all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
    again = HFVLMDiffusionPolicy.from_pretrained(str(tmp_path / "ckpt"))
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    ids = _expanded(policy, expected["input_ids"])
    with torch.no_grad():
        assert torch.equal(again.model(ids, expected["pixel_values"]).logits, policy.model(ids, expected["pixel_values"]).logits)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mm_patch_merge_type": "spatial_unpad_maxpool2x2"}, "mm_patch_merge_type='spatial_unpad_maxpool2x2' is not supported"),
        ({"mm_projector_type": "pooler"}, "mm_projector_type='pooler' is not supported natively"),
        ({"image_grid_pinpoints": "(2x2),...,(3x3)"}, r"does not make a 54 x 54 image one tile"),
        ({"mm_vision_tower": "openai/clip-vit-large-patch14-336"}, "runs SigLIP towers only"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling=.* is not supported natively"),
    ],
)
def test_unsupported_llada_v_options_are_refused(folder, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    raw = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(ValueError, match=message):
        HFVLMDiffusionPolicy.from_hf(bad)


def test_wrong_llada_v_weight_names_are_refused(folder, tmp_path):
    bad = tmp_path / "renamed"
    shutil.copytree(folder, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["model.mm_projector.1.weight"] = weights.pop("model.mm_projector.2.weight")
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['model.mm_projector.2.weight'\], unexpected \['model.mm_projector.1.weight'\]"):
        HFVLMDiffusionPolicy.from_hf(bad)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_llada_v_cache_equals_no_cache_on_one_layer_and_sees_each_image_once(tmp_path, observations, cache):
    one = llada_v_folder(tmp_path / "one", layers=1)

    def rollout(mode):
        policy = HFVLMDiffusionPolicy.from_hf(one, decoding=_decoding(mode))
        out = policy.rollout(observations[:2], 2, generator=torch.Generator().manual_seed(3))
        return out, policy.model.vision_calls

    (reference, uncached_calls), (cached, calls) = rollout("none"), rollout(cache)
    assert torch.equal(cached.sequences, reference.sequences)
    assert torch.equal(cached.unmask_step, reference.unmask_step)
    assert calls == uncached_calls == 2  # each image once for its 2 rows, not per row, block encode or step


def test_native_llada_v_passes_check_policy(folder):
    policy = HFVLMDiffusionPolicy.from_hf(folder, decoding=_decoding("dual"))
    assert check_policy(policy) == []


def test_the_feature_memo_keeps_what_a_batch_still_reads_when_full(folder):
    model = HFVLMDiffusionPolicy.from_hf(folder).model.eval()
    pixels = load_file(str(FIXTURE / "expected.safetensors"))["pixel_values"]
    model.MEMO_SIZE = 1
    with torch.no_grad():
        alone = model._features(pixels[:1])
        both = model._features(pixels)  # the memo is full with image 0; image 1 is new
        again = model._features(pixels[[1, 1]])
    assert torch.equal(both[0], alone[0]) and torch.equal(again[0], both[1]) and model.vision_calls == 2
