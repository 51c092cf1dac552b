"""Sharded training on 2 CPU processes (FSDP2 through torch's fully_shard, gloo): equal forwards per rank, the same
weights as DDP, gathered checkpoints, exact resume, a NaN on one rank skipped on both.

One ``accelerate launch`` of tests/sharded_worker.py (configs/accelerate/fsdp2_cpu.yaml) runs, in the same two
processes: FSDP2 for 4 steps (tests/fixtures/trainer/sharded.yaml: visual_math + image_edit with tree search +
grounding, forcing_prob 0.5, accumulation 2, regularizer kl, eval_episodes 3, checkpoints at 2 and 4), FSDP2
resumed from its checkpoint-2, and DDP with the same config; rank 1's gradients are NaN at step 3 in all three.
Measured with this config: FSDP2 all-gathers in rollouts 107 per-step vs 18 gathered once per batch (eval 50 vs 6),
identical weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from agents.metrics_log import MetricsLog

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(HERE, "fixtures", "trainer", "sharded.yaml")
LAUNCH = os.path.join(ROOT, "configs", "accelerate", "fsdp2_cpu.yaml")
NAN_STEP = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(reports per rank, output folder, wall seconds)`` of the one launch."""
    from test_trainer_distributed import free_port
    from tiny_dllm import save_qwen2

    base = tmp_path_factory.mktemp("sharded")
    folder = save_qwen2(base / "qwen2", hidden=32)
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "LAVIDA_TEST_NAN_STEP": str(NAN_STEP),
           "PYTHONPATH": os.pathsep.join([ROOT, HERE])}  # fmt: skip
    command = [launcher, "launch", "--config_file", LAUNCH, "--main_process_port", str(free_port()),
               os.path.join(HERE, "sharded_worker.py"), "--config", CONFIG, "--output_dir", str(base / "out"),
               "--policy", f"hf-a2d:{folder}"]  # fmt: skip
    begin = time.time()
    launch = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # a hang (unequal collectives) ends here, before pytest's own timeout
        _, stderr = launch.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        launch.send_signal(signal.SIGTERM)  # torch's launcher stops its workers on SIGTERM (SIGKILL would orphan them)
        try:
            _, stderr = launch.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            launch.kill()
            _, stderr = launch.communicate()
        pytest.fail(f"the 2-process run did not finish in 270 s (a collective waits forever?): {stderr[-3000:]}")
    wall = time.time() - begin
    assert launch.returncode == 0, stderr[-4000:]
    reports = [{r["name"]: r for r in json.loads((base / "out" / f"rank_{k}.json").read_text())} for k in (0, 1)]
    return reports, base / "out", wall


def _weights(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP's wrapper prefix


def test_the_run_is_sharded_and_records_what_ran(runs):
    reports, out, wall = runs
    assert wall < 240, f"the three runs took {wall:.0f} s"
    for rank in (0, 1):
        run = reports[rank]["fsdp"]["run"]
        assert run["world_size"] == 2 and run["sharding"] == "fsdp2-cpu" and run["distributed_type"] == "MULTI_CPU"
        assert run["sharded"] is True and reports[rank]["ddp"]["run"]["sharded"] is False
        assert run["gradient_accumulation_steps"] == 2 and run["mixed_precision"] == "no"
        assert reports[rank]["ddp"]["run"]["sharding"] is None
    assert json.loads((out / "fsdp" / "run.json").read_text())["sharding"] == "fsdp2-cpu"


def test_every_rank_makes_the_same_forwards_per_phase(runs):
    reports, _, _ = runs
    for name in ("fsdp", "resumed", "ddp"):
        first, second = reports[0][name]["forwards"], reports[1][name]["forwards"]
        assert first == second, f"{name}: rank 0 {first} != rank 1 {second}"
        assert {"rollout", "likelihood", "reference", "eval"} <= set(first) and min(first.values()) > 0
    rows = {r["step"]: r for r in MetricsLog.read(str(runs[1] / "fsdp" / "metrics.jsonl"))}  # this step's forwards
    assert rows[1]["forwards/likelihood"] > 0 and rows[1].get("forwards/rollout", 0.0) == 0.0  # the SFT step
    assert all(rows[s]["forwards/rollout"] > 0 and rows[s]["forwards/reference"] > 0 for s in (2, 3, 4))


def test_rollouts_and_eval_gather_the_weights_once_per_batch_not_per_denoising_step(runs):
    reports, _, _ = runs
    gathers, forwards = reports[0]["fsdp"]["all_gathers"], reports[0]["fsdp"]["forwards"]
    if gathers is None:
        pytest.skip("this torch has no torch.distributed.fsdp._fully_shard._fsdp_param_group.foreach_all_gather to count")
    assert gathers == reports[1]["fsdp"]["all_gathers"]
    # 3 FSDP units (2 layers + root) x 6 rollout batches (3 RL steps x accumulation 2); x 2 evaluations
    assert gathers["rollout"] == 18 < forwards["rollout"] and gathers["eval"] == 6 < forwards["eval"]


def test_fsdp2_trains_the_same_weights_as_ddp(runs):
    _, out, _ = runs
    fsdp, ddp = _weights(out / "fsdp" / "gathered.pt"), _weights(out / "ddp" / "gathered.pt")
    assert sorted(fsdp) == sorted(ddp)
    start = _weights_of_folder(out / "fsdp" / "checkpoint-2")
    assert max(float((fsdp[k] - start[k]).abs().max()) for k in fsdp) > 1e-5  # steps 3-4 changed the weights
    assert max(float((fsdp[k] - ddp[k]).abs().max()) for k in fsdp) < 1e-6


def _weights_of_folder(folder) -> dict[str, torch.Tensor]:
    from agents.hf.policy import HFDiffusionPolicy

    return HFDiffusionPolicy.from_pretrained(str(folder)).model.state_dict()


def test_a_sharded_checkpoint_loads_in_one_process_as_the_gathered_weights(runs):
    _, out, _ = runs
    gathered, loaded = _weights(out / "fsdp" / "gathered.pt"), _weights_of_folder(out / "fsdp" / "checkpoint-4")
    assert sorted(loaded) == sorted(gathered) and all(torch.equal(loaded[k], gathered[k]) for k in gathered)
    assert all((out / "fsdp" / "checkpoint-4" / f"rank_state_{r}.pt").is_file() for r in (0, 1))  # optimizer shards


def test_resuming_after_2_steps_is_bit_exact_with_4_uninterrupted(runs):
    reports, out, _ = runs
    whole, resumed = _weights(out / "fsdp" / "gathered.pt"), _weights(out / "resumed" / "gathered.pt")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert [r["resumed"]["steps"] for r in reports] == [4, 4]


def test_one_optimizer_step_per_trainer_step_and_a_nan_on_rank_1_is_skipped_on_both(runs):
    reports, out, _ = runs
    for rank in (0, 1):
        for name in ("fsdp", "ddp"):
            report = reports[rank][name]
            assert report["nan_step"] == {"skipped": 1.0, "warning": "non-finite gradient norm: step skipped",
                                          "grads_left": 0}, (rank, name)  # fmt: skip
            assert report["optimizer_steps"] == 3  # 4 trainer steps (accumulation 2), step 3 skipped
    rows = {r["step"]: r for r in MetricsLog.read(str(out / "fsdp" / "metrics.jsonl"))}
    assert rows[NAN_STEP]["skipped"] == 1.0 and rows[NAN_STEP + 1]["skipped"] == 0.0


def test_eval_of_three_problems_over_two_ranks_finishes(runs):
    _, out, _ = runs
    rows = MetricsLog.read(str(out / "fsdp" / "metrics.jsonl"))
    evals = [r for r in rows if "eval/reward/visual_math" in r]
    assert [r["step"] for r in evals] == [0, 4]
    assert all(0.0 <= r[f"eval/reward/{t}"] <= 1.0 for r in evals for t in ("visual_math", "image_edit", "grounding"))
