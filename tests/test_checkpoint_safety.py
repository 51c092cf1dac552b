"""Checkpoint safety (issue 17 items 1 and 6): nothing in a checkpoint runs, damaged files are named, saves are atomic."""

from __future__ import annotations

import os
import random
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from agents import checkpoint as ckpt
from agents.checkpoint import CheckpointError, checkpoint_dir, decode_state, encode_state, load_state_file
from agents.config import load_config
from agents.metrics_log import MetricsLog
from agents.trainer import Trainer, main

sys.path.insert(0, os.path.dirname(__file__))
from trainer_tiny import tiny_policy  # noqa: E402

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
SETTINGS = dict(sft_steps=1, max_steps=1, save_every=1, prompts_per_step=1, sft_per_step=1)


class _RunsCode:
    """Unpickling this calls ``os.system`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run that trained 2 steps and wrote checkpoint-1 and checkpoint-2."""
    out = str(tmp_path_factory.mktemp("saved") / "run")
    Trainer(load_config(TINY, output_dir=out, **SETTINGS), policy=tiny_policy()).train()
    return out


@pytest.fixture
def run(saved_run: str, tmp_path) -> str:
    """A private copy of the saved run (tests damage its files)."""
    out = str(tmp_path / "run")
    shutil.copytree(saved_run, out)
    return out


def resume(run: str, step: int = 1) -> Trainer:
    config = load_config(TINY, output_dir=run, resume_from=checkpoint_dir(run, step), **SETTINGS)
    return Trainer(config, policy=tiny_policy(seed=1))


# ----- item 1: a crafted pickle is refused, never run --------------------------------------
@pytest.mark.parametrize("name", ["trainer_state.pt", "rank_state_0.pt"])
def test_crafted_pickle_in_a_checkpoint_is_not_run_and_is_named(run, tmp_path, name):
    marker = tmp_path / "code_ran"
    torch.save({"step": 1, "payload": _RunsCode(str(marker))}, os.path.join(checkpoint_dir(run, 1), name))
    # the message names the file and the global the pickle asked for (os.system is posix.system or nt.system)
    named = rf"{re.escape(name)}: refused to load: .*\b(posix|nt)\.system\b.*nothing in it was run"
    with pytest.raises(CheckpointError, match=named):
        resume(run)
    assert not marker.exists(), "unpickling the checkpoint ran code from it"


def test_cli_resume_from_a_crafted_checkpoint_is_a_one_line_error(run, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    torch.save({"payload": _RunsCode(str(marker))}, os.path.join(checkpoint_dir(run, 1), "trainer_state.pt"))
    code = main(["--config", TINY, "--output_dir", run, "--resume_from", checkpoint_dir(run, 1),
                 "--policy", "tests/trainer_tiny.py:tiny_policy"])  # fmt: skip
    assert code == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert "trainer_state.pt: refused to load" in err and "Traceback" not in err


def test_checkpoint_files_load_with_weights_only(saved_run):
    directory = checkpoint_dir(saved_run, 1)
    for name in ("trainer_state.pt", "rank_state_0.pt"):
        raw = torch.load(os.path.join(directory, name), map_location="cpu", weights_only=True)
        assert isinstance(raw, dict)
    state = load_state_file(os.path.join(directory, "trainer_state.pt"))
    assert state["format"] == ckpt.STATE_FORMAT and state["step"] == 1


def test_rng_states_round_trip_exactly(tmp_path):
    generators = {"np": np.random.default_rng(7), "torch": torch.Generator().manual_seed(7)}
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = str(tmp_path / "rank_state_0.pt")
    torch.save(encode_state(ckpt._rng_states(generators)), path)

    def draws() -> list:
        return [random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn(),
                generators["np"].random(), torch.rand(1, generator=generators["torch"]).item()]  # fmt: skip

    expected = draws()
    ckpt._set_rng_states(load_state_file(path), generators, path)
    assert draws() == expected


def test_state_encoding_round_trips_numpy_dataclasses_and_plain_data():
    from agents.rollout import Problem

    value = {
        "array": np.arange(6, dtype=np.uint8).reshape(2, 3), "scalar": np.float64(0.25), "flag": np.bool_(True),
        "tensor": torch.arange(3), "tuple": (1, "a", None), "set": {1, 2}, "problem": Problem("grounding", 3),
        "tricky": {"__lavida__": "dataclass", "type": "os.system"}, "big": 2**100, "bytes": b"\x00",
    }  # fmt: skip
    back = decode_state(encode_state(value))
    assert back["array"].dtype == np.uint8 and np.array_equal(back["array"], value["array"])
    assert isinstance(back["scalar"], np.float64) and back["scalar"] == 0.25 and back["flag"] is np.True_
    assert torch.equal(back["tensor"], value["tensor"]) and back["problem"] == Problem("grounding", 3)
    assert {k: back[k] for k in ("tuple", "set", "tricky", "big", "bytes")} == {
        k: value[k] for k in ("tuple", "set", "tricky", "big", "bytes")
    }


def test_importing_the_trainer_checkpoint_alone_registers_every_state_dataclass():
    """Each state dataclass registers itself where it is defined; agents.checkpoint imports them all."""
    import subprocess

    code = "import agents.checkpoint as c; print(' '.join(sorted(c.STATE_TYPES)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == sorted([
        "agents.policy.Rollouts", "agents.rollout.ForcingConfig", "agents.rollout.GroupBatch",
        "agents.rollout.Problem", "agents.train_batch.TrainBatch", "lavida_envs.scoring.StepResult",
    ])  # fmt: skip


def test_saving_an_unknown_type_names_the_field():
    with pytest.raises(TypeError, match=r"local\['batches'\]\[0\].*Path"):
        from pathlib import Path

        encode_state({"batches": [Path(".")]}, "local")


def test_a_record_naming_an_unregistered_type_is_refused(tmp_path):
    path = str(tmp_path / "rank_state_0.pt")
    torch.save({"local": {"__lavida__": "dataclass", "type": "subprocess.Popen", "fields": {"args": "true"}}}, path)
    with pytest.raises(CheckpointError, match=r"rank_state_0.pt: field state\['local'\] has type 'subprocess.Popen'"):
        load_state_file(path)


# ----- item 6: damaged files are named -----------------------------------------------------
def _truncate(path: str, keep: float) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "name,keep",
    [("trainer_state.pt", 0.5), ("trainer_state.pt", 0.0), ("rank_state_0.pt", 0.5), ("model.safetensors", 0.5),
     ("model.safetensors", 0.0), ("policy_config.json", 0.5), ("config.json", 0.5), ("tokenizer.json", 0.5)],
)  # fmt: skip
def test_truncated_checkpoint_file_is_named(run, name, keep):
    path = os.path.join(checkpoint_dir(run, 1), name)
    _truncate(path, keep)
    with pytest.raises(ValueError) as info:
        resume(run)
    message = str(info.value)
    assert path in message, message
    assert "truncated or corrupt" in message


@pytest.mark.parametrize("name", ["model.safetensors", "policy_config.json", "tokenizer.json"])
def test_truncated_autoregressive_policy_file_is_named(tmp_path, name):
    from agents.autoregressive import ARPolicy

    ARPolicy.tiny(seed=0).save_pretrained(str(tmp_path))
    _truncate(str(tmp_path / name), 0.5)
    with pytest.raises(ValueError, match=rf"{tmp_path / name}: .*truncated or corrupt"):
        ARPolicy.from_pretrained(str(tmp_path))


def test_malformed_records_are_named(tmp_path):
    path = str(tmp_path / "rank_state_0.pt")
    for record in ({"__lavida__": "dict", "items": [1, 2]}, {"__lavida__": "ndarray", "dtype": "|O", "shape": [1],
                   "data": b"\0" * 8}, {"__lavida__": "nope"}):  # fmt: skip
        torch.save({"local": record}, path)
        with pytest.raises(CheckpointError, match=r"rank_state_0.pt: field state\['local'\]"):
            load_state_file(path)


def test_missing_policy_weights_are_named(run):
    os.remove(os.path.join(checkpoint_dir(run, 1), "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        resume(run)


def test_wrong_field_types_are_named(run):
    path = os.path.join(checkpoint_dir(run, 1), "trainer_state.pt")
    state = torch.load(path, weights_only=True)
    torch.save({**state, "step": "one"}, path)
    with pytest.raises(CheckpointError, match=r"trainer_state.pt: field 'step' is str 'one'"):
        resume(run)
    rank_path = os.path.join(checkpoint_dir(run, 1), "rank_state_0.pt")
    torch.save({**state, "step": 1}, path)
    torch.save({**torch.load(rank_path, weights_only=True), "python": "not a state"}, rank_path)
    with pytest.raises(CheckpointError, match=r"rank_state_0.pt: field 'python' is not a valid RNG state"):
        resume(run)


def test_half_written_last_metrics_line_is_dropped_on_resume(run):
    metrics = os.path.join(run, "metrics.jsonl")
    rows = MetricsLog.read(metrics)
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"loss": 1.5, "st')  # killed mid-write
    trainer = resume(run)
    assert MetricsLog.read(metrics) == rows[:1]  # rows after the checkpoint's step and the partial line are gone
    trainer.train()
    assert [r["step"] for r in MetricsLog.read(metrics)] == [1, 2]


def test_corrupt_middle_metrics_line_names_file_and_line(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{path}: line 2 is not valid JSON"):
        MetricsLog(path, resume_step=3)
    with pytest.raises(ValueError, match=rf"{path}: line 2 is not valid JSON"):
        MetricsLog.read(path)


def test_partial_last_line_with_a_cut_utf8_character_is_dropped(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "wb") as f:
        f.write(b'{"step": 1}\n{"step": 2, "note": "\xc3')
    MetricsLog(path, resume_step=5)
    with open(path, encoding="utf-8") as f:
        assert f.read() == '{"step": 1}\n'


# ----- item 6: atomic saves ----------------------------------------------------------------
def test_a_killed_save_leaves_no_checkpoint_that_looks_complete(run, monkeypatch):
    trainer = resume(run, 2)
    real_save = torch.save

    def dies_on_rank_state(obj, f, *args, **kwargs):
        if str(f).endswith("rank_state_0.pt"):
            raise KeyboardInterrupt("killed during the save")
        return real_save(obj, f, *args, **kwargs)

    target = checkpoint_dir(run, 7)
    monkeypatch.setattr(ckpt.torch, "save", dies_on_rank_state)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(target)
    assert not os.path.exists(target)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    trainer.save(target)  # the next save replaces the leftover partial folder
    assert sorted(n for n in os.listdir(run) if "checkpoint" in n) == ["checkpoint-1", "checkpoint-2", "checkpoint-7"]
    assert {"trainer_state.pt", "rank_state_0.pt", "model.safetensors"} <= set(os.listdir(target))


def test_saving_a_step_again_replaces_its_checkpoint(run):
    trainer = resume(run, 1)
    target = checkpoint_dir(run, 2)
    with open(os.path.join(target, "stale"), "w") as f:
        f.write("from the killed run")
    trainer.save(target)
    assert "stale" not in os.listdir(target)
    assert load_state_file(os.path.join(target, "trainer_state.pt"))["step"] == 1
    assert not [n for n in os.listdir(run) if n.startswith(".")]


# ----- issue 21 item 6: a checkpoint's model code runs only when this command opts in --------------
def _plant_code(folder: str, marker) -> None:
    """A modeling file that would leave ``marker`` behind if anything imported it."""
    with open(os.path.join(folder, "modeling_llada.py"), "w", encoding="utf-8") as f:
        f.write(f"open({str(marker)!r}, 'w').close()\n")


def test_resume_from_a_folder_with_model_code_needs_the_trust_flag_again(run, tmp_path):
    marker = tmp_path / "code_ran"
    _plant_code(checkpoint_dir(run, 1), marker)
    with pytest.raises(CheckpointError, match=r"--resume_from .*carries model code \(modeling_llada.py\).*--trust_remote_code true"):
        resume(run)
    assert not marker.exists()
    config = load_config(TINY, output_dir=run, resume_from=checkpoint_dir(run, 1), trust_remote_code=True, **SETTINGS)
    assert Trainer(config, policy=tiny_policy(seed=1)).step == 1  # opted in: the resume goes on


def test_cli_init_from_a_folder_with_model_code_needs_the_trust_flag(run, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    _plant_code(checkpoint_dir(run, 1), marker)
    code = main(["--config", TINY, "--output_dir", str(tmp_path / "next"), "--init_from", checkpoint_dir(run, 1)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and "Traceback" not in err
    assert "--init_from" in err and "modeling_llada.py" in err and "--trust_remote_code true" in err
