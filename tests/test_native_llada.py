"""Native LLaDA (agents.hf.llada): equal to the published code's logits, saved in LLaDA's layout, KV-cached exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from agents.diffusion.policy import DecodingConfig
from agents.hf.llada import LLaDAModelLM
from agents.hf.policy import HFDiffusionPolicy
from agents.policy_check import check_policy
from tiny_hf import build_tokenizer

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "native"


def llada_folder(path: Path, fixture: str = "llada") -> Path:
    """The published-code fixture (config.json + model.safetensors, no code file) plus the test tokenizer."""
    shutil.copytree(FIXTURES / fixture, path, ignore=shutil.ignore_patterns("expected.safetensors", "fixture.json"))
    build_tokenizer(chat_template=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada")
    return {name: llada_folder(root / name, name) for name in ("llada", "llada_tied")}


def _decoding(cache: str) -> DecodingConfig:
    return DecodingConfig(gen_length=16, steps=8, block_length=8, cache=cache, task_gen_length={"grounding": 32, "image_edit": 16})


@pytest.mark.parametrize("name", ["llada", "llada_tied"])
def test_native_llada_logits_equal_the_published_code(folders, name):
    # hf-dllm: on a folder with model_type llada needs no trust flag and runs no remote code (auto_map is ignored)
    assert "auto_map" in json.loads((folders[name] / "config.json").read_text())
    policy = HFDiffusionPolicy.from_hf(folders[name])
    model = policy.model.eval()
    assert isinstance(model.backbone, LLaDAModelLM) and model.kind == "llada" and not policy.remote_code
    assert model.backbone.config._attn_implementation == "sdpa" and model.config.vocab_size == 320  # embedding_size
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    ids, want = expected["input_ids"], expected["logits"]
    assert int((ids == policy.ids.mask).sum()) >= 9 and want.abs().max() > 0.5  # masked spans; logits not trivially small
    with torch.no_grad():
        raw = model.backbone(input_ids=ids, attention_mask=model.key_mask(torch.ones_like(ids, dtype=torch.bool))).logits
        got = model(ids).logits
    assert (raw - want).abs().max() < 1e-5
    # the denoiser: the same logits at the tokenizer's ids, NEG_LOGIT past them (ids 300.. of the 320 embeddings)
    limit = model.vocab_limit
    assert (got[..., :limit] - want[..., :limit]).abs().max() < 1e-5 and bool((got[..., limit:] < -1e8).all())


def test_a_left_padded_row_gives_the_unpadded_rows_logits(folders):
    model = HFDiffusionPolicy.from_hf(folders["llada"]).model.eval()
    expected = load_file(str(FIXTURES / "llada" / "expected.safetensors"))
    short, want = expected["short_ids"], expected["short_logits"]
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)
    keys = torch.ones_like(padded, dtype=torch.bool)
    keys[0, :3] = False
    with torch.no_grad():
        got = model(padded, attention_mask=keys).logits[:, 3:, : model.vocab_limit]
    assert (got - want[..., : model.vocab_limit]).abs().max() < 1e-5


def test_native_llada_saves_in_the_published_layout(folders, tmp_path):
    policy = HFDiffusionPolicy.from_hf(folders["llada"])
    policy.save_pretrained(str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    original = json.loads((folders["llada"] / "config.json").read_text())
    assert {k: v for k, v in saved.items()} == original  # every published key and value, auto_map included
    assert not list((tmp_path / "ckpt").glob("*.py"))
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f, \
         safe_open(str(folders["llada"] / "model.safetensors"), "pt") as g:  # fmt: skip
        assert set(f.keys()) == set(g.keys()) and all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
    again = HFDiffusionPolicy.from_pretrained(str(tmp_path / "ckpt"))
    ids = load_file(str(FIXTURES / "llada" / "expected.safetensors"))["input_ids"]
    assert isinstance(again.model.backbone, LLaDAModelLM)
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, policy.model(ids).logits)


def test_a_tied_checkpoint_saves_only_the_embedding(folders, tmp_path):
    policy = HFDiffusionPolicy.from_hf(folders["llada_tied"])
    backbone = policy.model.backbone
    assert backbone.lm_head.weight is backbone.model.embed_tokens.weight
    policy.save_pretrained(str(tmp_path / "tied"))
    with safe_open(str(tmp_path / "tied" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.transformer.wte.weight" in names and "model.transformer.ff_out.weight" not in names


def test_unsupported_options_and_wrong_weight_names_are_refused(folders, tmp_path):
    folder = tmp_path / "sequential"
    shutil.copytree(folders["llada"], folder)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "block_type": "sequential"}))
    with pytest.raises(ValueError, match=r"block_type='sequential' is not supported natively.*block_type: \"llama\""):
        HFDiffusionPolicy.from_hf(folder)
    (folder / "config.json").write_text(json.dumps({**raw, "embedding_size": 200}))
    with pytest.raises(ValueError, match="embedding_size=200 is below vocab_size=300"):
        HFDiffusionPolicy.from_hf(folder)
    (folder / "config.json").write_text(json.dumps(raw))
    weights = load_file(str(folder / "model.safetensors"))
    weights["model.transformer.blocks.0.att_proj.weight"] = weights.pop("model.transformer.blocks.0.q_proj.weight")
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['model.transformer.blocks.0.q_proj.weight'\].*att_proj"):
        HFDiffusionPolicy.from_hf(folder)
    weights["model.transformer.blocks.0.q_proj.weight"] = weights.pop("model.transformer.blocks.0.att_proj.weight")[:, :-1]
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"weight model.transformer.blocks.0.q_proj.weight has shape \(\d+, \d+\) but the config gives"):
        HFDiffusionPolicy.from_hf(folder)


def test_llada_window_logits_equal_the_full_forward(folders):
    model = HFDiffusionPolicy.from_hf(folders["llada"]).model.eval()
    x = torch.randint(5, 290, (2, 20), generator=torch.Generator().manual_seed(0))
    keys = torch.ones_like(x, dtype=torch.bool)
    keys[0, :3] = False
    full = model(x, attention_mask=keys).logits
    logits, cache = model.encode_with_cache(x, attention_mask=keys)
    assert cache.shape == (2, 2, 2, 2, 20, 8) and torch.allclose(logits, full, atol=1e-6)
    for start, end in ((0, 6), (10, 14), (14, 20)):
        assert torch.allclose(model.forward_window(x, keys, start, end, cache), full[:, start:end], atol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_llada_cache_equals_no_cache_on_one_layer(folders, observations, cache):
    def rollout(mode):
        policy = HFDiffusionPolicy.from_hf(folders["llada_tied"], decoding=_decoding(mode))
        return policy.rollout(observations, 2, generator=torch.Generator().manual_seed(3))

    reference, cached = rollout("none"), rollout(cache)
    assert torch.equal(cached.sequences, reference.sequences)
    assert torch.equal(cached.unmask_step, reference.unmask_step)


def test_native_llada_passes_check_policy(folders):
    policy = HFDiffusionPolicy.from_hf(folders["llada"], decoding=_decoding("dual"))
    assert check_policy(policy) == []


TINY = str(Path(__file__).parent / "fixtures" / "trainer" / "tiny.yaml")


def test_a_killed_native_llada_run_resumes_bit_exactly(folders, tmp_path):
    # As tests/test_resume.py: 1 SFT + 3 RL steps, 2 updates per RL batch, checkpoint at step 2 inside a batch;
    # the resumed trainer starts from other weights, which the checkpoint (LLaDA's layout) must overwrite.
    from agents.checkpoint import checkpoint_dir
    from agents.config import load_config
    from agents.metrics_log import MetricsLog
    from agents.trainer import Trainer

    settings = dict(policy=f"hf-dllm:{folders['llada']}", sft_steps=1, max_steps=3, updates_per_batch=2, forcing_prob=0.5,
                    save_every=2, lr_scheduler_type="linear", prompts_per_step=1, sft_per_step=1, cache="dual")  # fmt: skip
    whole = Trainer(load_config(TINY, output_dir=str(tmp_path / "whole"), **settings))
    whole.train()
    Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), **settings)).train(stop_at=3)
    other = llada_folder(tmp_path / "other")
    weights = {k: v + 0.01 for k, v in load_file(str(other / "model.safetensors")).items()}
    save_file(weights, str(other / "model.safetensors"))
    resume = checkpoint_dir(str(tmp_path / "broken"), 2)
    assert json.loads((Path(resume) / "config.json").read_text())["model_type"] == "llada"  # LLaDA layout, no code file
    assert not list(Path(resume).glob("*.py"))
    resumed = Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), resume_from=resume, **settings),
                      policy=HFDiffusionPolicy.from_hf(other))  # fmt: skip
    assert resumed.step == 2
    resumed.train()
    wall = {"time", "tokens_per_s", "cpu_time"}  # wall-clock and process-CPU fields differ between runs
    rows = {name: [{k: v for k, v in r.items() if k not in wall} for r in MetricsLog.read(str(tmp_path / name / "metrics.jsonl"))]
            for name in ("whole", "broken")}  # fmt: skip
    assert [r["step"] for r in rows["broken"]] == [1, 2, 3, 4] and rows["broken"] == rows["whole"]
    a, b = (dict(t.accelerator.unwrap_model(t.model).state_dict()) for t in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bench_cache_takes_a_native_folder_spec(folders):
    # lavida bench cache --policy hf-dllm:DIR measures the native backbone (the cache ratios of issue 21)
    from evaluation.bench_cache import load_policy

    policy = load_policy(f"hf-dllm:{folders['llada']}", 32)
    assert isinstance(policy, HFDiffusionPolicy) and isinstance(policy.model.backbone, LLaDAModelLM)
