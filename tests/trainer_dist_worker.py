"""Run by ``accelerate launch`` in tests/test_trainer_distributed.py: train, then write this rank's parameter hash."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

from agents.config import parse_config
from agents.trainer import Trainer


def main() -> None:
    """Train with the config in argv; write ``output_dir/rank_<r>.json`` (parameter hash, last problems)."""
    trainer = Trainer(parse_config(sys.argv[1:]))
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    problems = [[p["index"] for p in part.problems] for batch in trainer._batches for part in batch.parts]
    out = {"rank": trainer.accelerator.process_index, "world": trainer.accelerator.num_processes,
           "params": digest.hexdigest(), "problems": problems, "grad_sync": torch.distributed.is_initialized()}
    with open(os.path.join(trainer.config.output_dir, f"rank_{out['rank']}.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
