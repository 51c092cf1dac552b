"""Run by ``accelerate launch`` in tests/test_trainer_distributed.py: train, then write this rank's parameter hash."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

from agents.config import parse_config
from agents.trainer import Trainer


def digest(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names and bytes)."""
    out = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        out.update(name.encode())
        out.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return out.hexdigest()


def main() -> None:
    """Train with the config in argv; write ``output_dir/rank_<r>.json`` (parameter hash, last problems)."""
    trainer = Trainer(parse_config(sys.argv[1:]))
    initial = digest(trainer.accelerator.unwrap_model(trainer.model))
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    problems = [[p["index"] for p in part.problems] for batch in trainer._batches for part in batch.parts]
    out = {"rank": trainer.accelerator.process_index, "world": trainer.accelerator.num_processes, "initial": initial,
           "params": digest(model), "problems": problems, "grad_sync": torch.distributed.is_initialized()}
    if trainer.reference is not None:
        ref = trainer.reference.model
        out["reference"] = digest(ref)
        out["reference_frozen"] = not ref.training and not any(p.requires_grad for p in ref.parameters())
    with open(os.path.join(trainer.config.output_dir, f"rank_{out['rank']}.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
