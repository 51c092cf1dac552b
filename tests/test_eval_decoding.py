"""Trained checkpoints evaluate greedily by default; the training decoding is kept and the eval says which it uses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agents.diffusion.policy import DiffusionPolicy
from agents.eval_decoding import TRAINING_DECODING_KEY, describe_checkpoint_decoding, write_eval_decoding


def _trained_policy() -> DiffusionPolicy:
    policy = DiffusionPolicy.tiny(seed=0)
    policy.decoding.temperature = 1.0  # what an RL run samples with
    return policy


def _fake_trainer(policy):
    accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    return SimpleNamespace(accelerator=accelerator, policy=policy)


@pytest.mark.parametrize("how", ["save_policy", "save"])
def test_trainer_checkpoints_default_to_greedy_and_keep_the_training_decoding(tmp_path, monkeypatch, how):
    import agents.trainer as trainer_module

    policy = _trained_policy()
    fake = _fake_trainer(policy)
    folder = tmp_path / "ckpt"
    if how == "save":
        def save_checkpoint(directory, **kwargs):
            kwargs["policy"].save_pretrained(directory)
            return directory

        monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
        fake.elapsed, fake.alarm, fake.config = 0.0, SimpleNamespace(state_dict=dict), SimpleNamespace(to_dict=dict)
        fake.optimizer = fake.scheduler = fake.rngs = None
        fake.step, fake._batches = 1, 0
        trainer_module.Trainer.save(fake, str(folder))
    else:
        trainer_module.Trainer.save_policy(fake, str(folder))
    meta = json.loads((folder / "policy_config.json").read_text())
    assert meta["decoding"]["temperature"] == 0.0 and meta[TRAINING_DECODING_KEY]["temperature"] == 1.0
    assert {k: v for k, v in meta["decoding"].items() if k != "temperature"} == {
        k: v for k, v in meta[TRAINING_DECODING_KEY].items() if k != "temperature"
    }
    assert DiffusionPolicy.from_pretrained(str(folder)).decoding.temperature == 0.0
    assert DiffusionPolicy.from_pretrained(str(folder), temperature=1.0).decoding.temperature == 1.0
    assert policy.decoding.temperature == 1.0  # the live policy keeps sampling as trained


def test_eval_prints_and_records_which_decoding_it_uses(tmp_path, capsys):
    from evaluation.evaluate import main
    from evaluation.results import read_results

    folder = tmp_path / "ckpt"
    _trained_policy().save_pretrained(str(folder))
    write_eval_decoding(str(folder))
    common = ["--policy", str(folder), "--env", "LaViDa/Grounding-v0", "--episodes", "1", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "greedy")]) == 0
    line = capsys.readouterr().err
    assert "decoding: greedy (the checkpoint's evaluation decoding); trained with temperature 1.0" in line
    results = read_results(tmp_path / "greedy")
    assert results["policy"]["decoding"]["temperature"] == 0.0 and "greedy" in results["policy"]["decoding_note"]
    assert main([*common, "--out", str(tmp_path / "sampled"), "--policy-kwargs", "temperature=1.0"]) == 0
    assert "sampling at temperature 1.0 (the checkpoint's saved decoding with --policy-kwargs" in capsys.readouterr().err
    assert read_results(tmp_path / "sampled")["policy"]["decoding"]["temperature"] == 1.0


def test_an_older_checkpoint_says_it_samples_as_trained():
    line = describe_checkpoint_decoding({"decoding": {"temperature": 1.0}}, {})
    assert "sampling at temperature 1.0" in line and "older checkpoint" in line and "temperature=0" in line
