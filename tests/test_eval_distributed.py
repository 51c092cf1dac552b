"""``accelerate launch -m evaluation.evaluate`` with 2 CPU processes merges into a single-process result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from evaluation.evaluate import main
from evaluation.results import comparable, read_results

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--policy", "random", "--env", "LaViDa/MultiTask-v0", "--episodes", "7", "--samples", "2",
        "--batch-size", "2", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_single_process_results(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    # --multi_gpu is what makes accelerate start W processes through torch.distributed.run; on a
    # machine without CUDA each rank runs on CPU (gloo). (--cpu alone starts one process.)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
           "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "evaluation.evaluate", *ARGS, "--out", str(tmp_path / "dist")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*ARGS, "--out", str(tmp_path / "single")]) == 0
    dist, single = read_results(tmp_path / "dist"), read_results(tmp_path / "single")
    assert dist["run"]["num_processes"] == 2
    assert comparable(dist) == comparable(single)
    assert (tmp_path / "dist/samples.jsonl").read_bytes() == (tmp_path / "single/samples.jsonl").read_bytes()
    names = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert names == ["eval_config.json", "results.json", "samples.jsonl"]  # the rank parts were merged
