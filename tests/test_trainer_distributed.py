"""Distributed: 2 CPU processes (accelerate launch, gloo) train 2 steps and end with identical parameters."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

from agents.metrics_log import MetricsLog

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TINY = os.path.join(HERE, "fixtures", "trainer", "tiny.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(out, *args: str) -> list[dict]:
    """``accelerate launch`` 2 gloo CPU processes of trainer_dist_worker.py; returns each rank's report."""
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    assert launcher, "the accelerate CLI is part of the install (pyproject dependency)"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()), os.path.join(HERE, "trainer_dist_worker.py"),
        "--config", TINY, "--output_dir", str(out), "--tasks", "visual_math:1", "--sft_steps", "1", "--max_steps", "1", *args,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank_{r}.json").read_text()) for r in (0, 1)]


def test_two_cpu_processes_keep_identical_parameters(tmp_path):
    out = tmp_path / "run"
    ranks = launch(out)
    assert [r["world"] for r in ranks] == [2, 2] and all(r["grad_sync"] for r in ranks)
    assert ranks[0]["params"] == ranks[1]["params"]  # DDP averaged the gradients: one model
    assert ranks[0]["problems"] != ranks[1]["problems"]  # each rank sampled its own prompts
    rows = MetricsLog.read(str(out / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]  # written once (main process), not once per rank
    assert (out / "checkpoint-2" / "rank_state_0.pt").is_file() and (out / "checkpoint-2" / "rank_state_1.pt").is_file()


def test_two_cpu_processes_train_an_hf_a2d_backbone_with_a_kl_reference(tmp_path):
    from tiny_dllm import save_qwen2

    folder = save_qwen2(tmp_path / "qwen2", hidden=32)
    out = tmp_path / "run"
    ranks = launch(out, "--policy", f"hf-a2d:{folder}", "--regularizer", "kl", "--beta", "0.5", "--forcing_prob", "0")
    assert all(r["grad_sync"] and r["reference_frozen"] for r in ranks)
    assert ranks[0]["params"] == ranks[1]["params"] != ranks[0]["initial"]  # trained, and one model on both ranks
    assert ranks[0]["reference"] == ranks[1]["reference"] == ranks[0]["initial"]  # the reference never moved
    rl = [r for r in MetricsLog.read(str(out / "metrics.jsonl")) if "reward" in r]
    assert len(rl) == 1 and rl[0]["kl"] > 0.0  # after the SFT step the policy differs from the reference
    from agents.hf.policy import HFDiffusionPolicy

    assert isinstance(HFDiffusionPolicy.from_pretrained(str(out)), HFDiffusionPolicy)  # the saved policy loads
