"""DiffusionGemma (agents.hf.dgemma): policy contract, the published SFT recipe's loss, SFT recall, cache, LoRA, CLI, resume."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F

from agents import check_policy
from agents.diffusion.policy import DecodingConfig
from agents.diffusion.uniform import uniform_passes
from agents.hf.dgemma import DGemmaPolicy
from agents.losses import sft_loss
from agents.sft import reference_action
from tiny_dgemma import save_tiny_dgemma

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
LETTERS = "ABDEFGHJ"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_dgemma(tmp_path_factory.mktemp("dgemma") / "tiny")


def _problems(n: int, named: bool = True) -> tuple[list[dict], list[str]]:
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1, image_size=64)
    observations, targets = [], []
    for i in range(n):
        obs, info = env.reset(options={"index": i})
        observations.append(dict(obs, prompt=f"Problem {LETTERS[i]}.") if named else obs)
        targets.append(reference_action(env, info))
    return observations, targets


def test_tiny_dgemma_passes_check_policy_and_specs_select_it(folder):
    from agents.specs import trainable_policy

    policy = trainable_policy(f"hf-dgemma:{folder}")
    assert isinstance(policy, DGemmaPolicy) and isinstance(trainable_policy(f"hf-dllm:{folder}"), DGemmaPolicy)
    assert sum(p.numel() for p in policy.model.parameters()) == 184_276
    assert check_policy(policy) == []


def _recipe_loss(policy: DGemmaPolicy, batch, passes) -> torch.Tensor:
    """The published recipe (TRL examples/scripts/sft_diffusion_gemma.py) computed by hand with plain transformers calls.

    One canvas (gen_length == canvas_length), the corruption and self-conditioning draws of ``passes``
    (one random_mask pass); flat CE over every canvas position + the encoder's AR CE over the attended
    next-token pairs (image placeholders are no targets, docs/uniform_diffusion.md).
    """
    model = policy.model.inner
    ids, attention = batch.sequences, batch.attention_mask.long()
    prompt_len = int((~batch.response_mask[0]).sum())
    canvas_len = ids.shape[1] - prompt_len
    target = ids[:, prompt_len:]
    (one,) = passes
    pixels = batch.pixel_values
    kwargs = dict(input_ids=ids, attention_mask=attention, pixel_values=pixels[..., :-2], image_position_ids=pixels[..., -2:].long(),
                  decoder_input_ids=one.tokens[:, prompt_len:],
                  decoder_attention_mask=torch.cat([(torch.arange(ids.shape[1]) < prompt_len).long().expand_as(ids),
                                                    torch.ones(len(ids), canvas_len, dtype=torch.long)], 1),
                  decoder_position_ids=prompt_len + torch.arange(canvas_len)[None])  # fmt: skip
    with torch.no_grad():
        kwargs["self_conditioning_logits"] = model(**kwargs).logits
    kwargs["self_conditioning_mask"] = one.self_condition
    out = model(**kwargs)
    diffusion = F.cross_entropy(out.logits.flatten(0, 1), target.flatten())
    cap = model.config.text_config.final_logit_softcapping
    enc = torch.tanh(model.lm_head(out.encoder_last_hidden_state).float() / cap) * cap
    pairs = attention[:, :-1].bool() & attention[:, 1:].bool() & (ids[:, 1:] != policy.ids.image)
    ar = F.cross_entropy(enc[:, :-1].flatten(0, 1), torch.where(pairs, ids[:, 1:], -100).flatten(), ignore_index=-100)
    return diffusion + ar


def test_sft_loss_is_the_published_recipe_loss_on_the_same_batch(folder):
    policy = DGemmaPolicy.from_hf(folder, decoding=DecodingConfig(gen_length=16))
    observations, targets = _problems(3, named=False)  # equal prompts: equal lengths, no padding (flat means = row means)
    batch = policy.sft_rollouts(observations, targets)
    passes = uniform_passes(batch.sequences, policy.scored_mask(batch), estimator="random_mask", mask_seed=7,
                            vocab_size=policy.model.config.vocab_size)  # fmt: skip
    (one,) = passes
    assert bool(one.self_condition.any()) and not bool(one.self_condition.all())  # both branches of p = 0.5 in the batch
    assert bool((one.corrupted <= batch.response_mask).all()) and 0 < int(one.corrupted.sum()) < int(batch.response_mask.sum())
    estimate = policy.log_likelihood_terms(batch, "random_mask", mask_seed=7)
    ours = sft_loss(estimate.loglik, policy.scored_mask(batch).sum(1))
    assert torch.allclose(ours, _recipe_loss(policy, batch, passes), atol=1e-5), (ours, _recipe_loss(policy, batch, passes))
    assert torch.equal(policy.log_likelihood_terms(batch, "random_mask", mask_seed=7).loglik, estimate.loglik)
    rl_rows = batch.map_fields(lambda n, v: v)
    rl_rows.extras.pop("reference")  # the same rows as RL rollouts: the diffusion term only
    assert bool((policy.log_likelihood(rl_rows, "random_mask", 7) > estimate.loglik).all())


def test_uniform_passes_generalise_the_three_estimators():
    seqs = torch.arange(40).reshape(2, 20)
    response = torch.zeros(2, 20, dtype=torch.bool)
    response[:, 8:] = True
    first, second = uniform_passes(seqs, response, estimator="complementary", mask_seed=3, vocab_size=1000)
    assert not bool((first.corrupted & second.corrupted).any()) and torch.equal(first.corrupted | second.corrupted, response)
    assert torch.equal(first.weight, torch.full((2,), 0.5))
    for one in (first, second):
        assert torch.equal(one.tokens[~one.corrupted], seqs[~one.corrupted]) and not bool((one.corrupted & ~response).any())
    (mf,) = uniform_passes(seqs, response, estimator="mean_field", mask_seed=3, vocab_size=1000)
    assert torch.equal(mf.corrupted, response) and torch.equal(mf.weight, torch.ones(2))
    again = uniform_passes(seqs, response, estimator="complementary", mask_seed=3, vocab_size=1000)
    assert torch.equal(again[0].tokens, first.tokens) and torch.equal(again[1].self_condition, second.self_condition)
    alone = uniform_passes(seqs[1:], response[1:], estimator="complementary", mask_seed=torch.tensor([
        __import__("agents.diffusion.masking", fromlist=["row_seed"]).row_seed(3, 1)]), vocab_size=1000)  # fmt: skip
    assert torch.equal(alone[0].tokens[0], first.tokens[1])  # a row's draws do not depend on the other rows
    with pytest.raises(ValueError, match="estimator"):
        uniform_passes(seqs, response, estimator="nope", mask_seed=0, vocab_size=10)


def test_cached_decoding_equals_re_encoding_and_tree_continuation_keeps_the_parent(folder):
    observations, _ = _problems(2)
    policy = DGemmaPolicy.from_hf(folder, decoding=DecodingConfig(gen_length=32, steps=8, cache="prefix"))
    cached = policy.rollout(observations, 2, forced=["<answer>7</answer>", None], generator=torch.Generator().manual_seed(0))
    policy.decoding = DecodingConfig(gen_length=32, steps=8, cache="none")
    fresh = policy.rollout(observations, 2, forced=["<answer>7</answer>", None], generator=torch.Generator().manual_seed(0))
    assert torch.equal(cached.sequences, fresh.sequences) and torch.equal(cached.unmask_step, fresh.unmask_step)
    assert cached.extras["nfe"] == fresh.extras["nfe"] == 8  # one batched call per step: 2 canvases of 16 x 4 steps
    assert all(t.endswith("<answer>7</answer>") for t in cached.texts[:2])
    record = cached.unmask_step[cached.response_mask].reshape(4, 32)
    assert int(record.min()) >= 0 and int(record.max()) <= 8 and bool((record[:2] == 0).any())
    parents = cached.map_fields(lambda n, v: v[[0, 2]] if hasattr(v, "shape") and len(v) == 4 else v)
    parents.texts, parents.actions = [cached.texts[0], cached.texts[2]], [cached.actions[0], cached.actions[2]]
    kids = policy.rollout_from(observations, parents, 3, 2, generator=torch.Generator().manual_seed(1))
    kept = (parents.unmask_step <= 3) & parents.response_mask
    for child, parent in ((0, 0), (1, 0), (2, 1), (3, 1)):
        assert torch.equal(kids.sequences[child][kept[parent]], parents.sequences[parent][kept[parent]])
    last = policy.rollout_from(observations, parents, 8, 1)
    assert torch.equal(last.sequences, parents.sequences) and last.extras["nfe"] == 0



def test_two_rl_steps_through_lavida_train_with_lora_then_eval(folder, tmp_path):
    from agents.hf.lora import has_adapter
    from agents.metrics_log import MetricsLog
    from evaluation.cli import main

    out = tmp_path / "run"
    args = ["train", "--config", TINY, "--policy", f"hf-dgemma:{folder}", "--output_dir", str(out), "--max_steps", "2",
            "--sft_steps", "0", "--prompts_per_step", "1", "--sft_per_step", "1", "--lora_r", "4", "--lora_alpha", "8"]  # fmt: skip
    assert main(args) == 0
    rl = [r for r in MetricsLog.read(str(out / "metrics.jsonl")) if "reward" in r]
    assert len(rl) == 2 and all(r["skipped"] == 0.0 and torch.isfinite(torch.tensor(r["loss"])) for r in rl)
    policy = DGemmaPolicy.from_pretrained(str(out))
    assert has_adapter(policy.model.backbone) and (out / "adapter").is_dir()
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    evaluation = tmp_path / "eval"
    assert main(["eval", "--policy", str(out), "--env", "LaViDa/VisualMath-v0", "--env-kwargs", "image_size=32",
                 "--episodes", "2", "--out", str(evaluation)]) == 0  # fmt: skip
    assert (evaluation / "results.json").is_file()


def test_a_killed_dgemma_run_resumes_bit_exactly(folder, tmp_path):
    from agents.checkpoint import checkpoint_dir
    from agents.config import load_config
    from agents.metrics_log import MetricsLog
    from agents.trainer import Trainer

    settings = dict(policy=f"hf-dgemma:{folder}", sft_steps=1, max_steps=3, updates_per_batch=2, forcing_prob=0.5, save_every=2,
                    lr_scheduler_type="linear", prompts_per_step=1, sft_per_step=1, tree_branch_steps=[0])  # fmt: skip
    whole = Trainer(load_config(TINY, output_dir=str(tmp_path / "whole"), **settings))
    whole.train()
    Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), **settings)).train(stop_at=3)
    start = DGemmaPolicy.from_hf(save_tiny_dgemma(tmp_path / "other", seed=1))
    resume = checkpoint_dir(str(tmp_path / "broken"), 2)
    resumed = Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), resume_from=resume, **settings), policy=start)
    assert resumed.step == 2
    resumed.train()
    wall = {"time", "tokens_per_s", "cpu_time"}  # wall-clock and process-CPU fields differ between runs
    rows = {name: [{k: v for k, v in r.items() if k not in wall} for r in MetricsLog.read(str(tmp_path / name / "metrics.jsonl"))]
            for name in ("whole", "broken")}  # fmt: skip
    assert [r["step"] for r in rows["broken"]] == [1, 2, 3, 4] and rows["broken"] == rows["whole"]
    a, b = (dict(t.accelerator.unwrap_model(t.model).state_dict()) for t in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_untrained_folder_evaluates_through_lavida_eval_under_hf_dllm(folder, tmp_path):
    from evaluation.cli import main
    from evaluation.results import read_results

    out = tmp_path / "eval"
    assert main(["eval", "--policy", f"hf-dllm:{folder}", "--env", "LaViDa/VisualMath-v0", "--env-kwargs", "image_size=32",
                 "--episodes", "2", "--policy-kwargs", "gen_length=16,steps=4", "--out", str(out)]) == 0  # fmt: skip
    results = read_results(out)
    assert results["policy"]["class"] == "agents.hf.dgemma.DGemmaPolicy" and results["n"] == 2


def _broken(folder, tmp_path, name: str, edit) -> str:
    import json
    import shutil

    copy = tmp_path / name
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(copy, config)
    return str(copy)


BROKEN = {  # name -> (edit of the copied folder and its config.json, what the error must say)
    "no_text_config": (lambda d, c: (d / "config.json").write_text(__import__("json").dumps({k: v for k, v in c.items() if k != "text_config"})),
                       "config.json: text_config is None"),
    "bad_vocab": (lambda d, c: (d / "config.json").write_text(__import__("json").dumps({**c, "text_config": {**c["text_config"], "vocab_size": 0}})),
                  "config.json: text_config.vocab_size is 0; it must be an int >= 1"),
    "image_id_outside": (lambda d, c: (d / "config.json").write_text(__import__("json").dumps({**c, "image_token_id": 10**6})),
                         "config.json: image_token_id is 1000000; it must index"),
    "other_model_type": (lambda d, c: (d / "config.json").write_text(__import__("json").dumps({**c, "model_type": "llama"})),
                         "config.json: model_type is 'llama'; hf-dgemma: needs 'diffusion_gemma'"),
    "not_json": (lambda d, c: (d / "config.json").write_text("{oops"), "config.json: not valid JSON"),
    "no_config": (lambda d, c: (d / "config.json").unlink(), "has no config.json"),
    "no_processor": (lambda d, c: (d / "preprocessor_config.json").unlink(), "has no image processor (preprocessor_config.json)"),
    "no_weights": (lambda d, c: (d / "model.safetensors").unlink(), "no file named model.safetensors"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_folder_is_refused_naming_the_file_and_field(folder, tmp_path, name, capsys):
    from evaluation.cli import main

    edit, message = BROKEN[name]
    path = _broken(folder, tmp_path, name, edit)
    assert main(["check-policy", f"hf-dgemma:{path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and path in err and "Traceback" not in err
    if name in ("no_text_config", "no_weights"):  # lavida train: the same message, exit 2, no traceback
        assert main(["train", "--env", "LaViDa/VisualMath-v0", "--policy", f"hf-dgemma:{path}", "--output_dir",
                     str(tmp_path / "run")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert f"TrainConfig.policy='hf-dgemma:{path}'" in err and message in err
    assert main(["check-policy", f"hf-dgemma:{tmp_path / 'nowhere'}"]) == 2
    assert "is not a directory" in capsys.readouterr().err
