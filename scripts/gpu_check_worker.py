"""Run by scripts/gpu_check.sh under ``accelerate launch``: train, then print one JSON line (step times, peak memory).

``python scripts/gpu_check_worker.py --config FILE.yaml [--field value ...]`` trains like ``agents.trainer`` and
prints ``{"backend", "world_size", "steps", "step_seconds", "peak_memory_gib", "loss"}`` from the main process.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from agents.config import parse_config
from agents.metrics_log import MetricsLog
from agents.trainer import Trainer


def main() -> None:
    """Train with the config in argv and print the summary line."""
    trainer = Trainer(parse_config(sys.argv[1:]))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    if trainer.accelerator.is_main_process:
        rows = MetricsLog.read(os.path.join(trainer.config.output_dir, "metrics.jsonl"))
        times = [r["time"] for r in rows if "time" in r]
        steps = [b - a for a, b in zip([0.0, *times], times)]
        print("GPU_CHECK " + json.dumps({
            "backend": trainer.run_info["sharding"] or trainer.run_info["distributed_type"],
            "world_size": trainer.run_info["world_size"], "steps": trainer.step, "step_seconds": steps,
            "peak_memory_gib": round(peak, 3), "loss": [r.get("loss") for r in rows],
        }))  # fmt: skip


if __name__ == "__main__":
    main()
