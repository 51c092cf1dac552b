"""Run by ``accelerate launch`` in tests/test_trainer_sharded.py: train three runs, then report this rank's view.

``LAVIDA_TEST_NAN_STEP=S`` makes rank 1's loss have NaN gradients (a finite loss) at step S; the
report records, per rank, the forwards per phase, whether step S was skipped and whether any
gradient was left after it. Rank 0 also writes ``gathered.pt`` (the full state dict at the end).
"""

from __future__ import annotations

import json
import os
import sys

import torch

from agents.config import parse_config
from agents.sharded_state import gathered_parameters
from agents.trainer import Trainer


class NanGrad(torch.autograd.Function):
    """Identity forward, NaN backward."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad * float("nan")


def inject_nan(trainer: Trainer, step: int, report: dict) -> None:
    """Rank 1: NaN gradients at ``step``; every rank: record skip and leftover gradients of that step."""
    loss_of, step_of = trainer._loss, trainer._optimizer_step

    def loss(batch, sft_step):
        value, metrics = loss_of(batch, sft_step)
        if trainer.step + 1 == step and trainer.accelerator.process_index == 1:
            value = NanGrad.apply(value)
        return value, metrics

    def optimizer_step(finite):
        out = step_of(finite)
        if trainer.step + 1 == step:
            report["nan_step"] = {"skipped": out.get("skipped"), "warning": out.get("warning"),
                                  "grads_left": sum(p.grad is not None for p in trainer.model.parameters())}  # fmt: skip
        return out

    trainer._loss, trainer._optimizer_step = loss, optimizer_step


def count_all_gathers(trainer: Trainer, report: dict) -> None:
    """Count FSDP2's parameter all-gathers per forward phase into ``report["all_gathers"]``."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as groups  # private: may move in a later torch

    if not callable(getattr(groups, "foreach_all_gather", None)):
        report["all_gathers"] = None
        return
    original = getattr(groups.foreach_all_gather, "__wrapped__", groups.foreach_all_gather)
    report["all_gathers"] = {}

    def counted(*args, **kwargs):
        phase = trainer.forwards.current
        report["all_gathers"][phase] = report["all_gathers"].get(phase, 0) + 1
        return original(*args, **kwargs)

    counted.__wrapped__ = original
    groups.foreach_all_gather = counted


def run(argv: list[str], name: str) -> dict:
    """Train one run; write ``output_dir/gathered.pt`` (main) and return this rank's report."""
    trainer = Trainer(parse_config(argv))
    report: dict = {"optimizer_steps": 0}
    if os.environ.get("LAVIDA_TEST_NAN_STEP"):
        inject_nan(trainer, int(os.environ["LAVIDA_TEST_NAN_STEP"]), report)
    count_all_gathers(trainer, report)
    step = trainer.optimizer.step

    def counted_step(*args, **kwargs):
        report["optimizer_steps"] += 1
        return step(*args, **kwargs)

    trainer.optimizer.step = counted_step
    trainer.train()
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    with gathered_parameters(model):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if acc.is_main_process:
        torch.save(state, os.path.join(trainer.config.output_dir, "gathered.pt"))
    report.update(name=name, rank=acc.process_index, world=acc.num_processes, forwards=trainer.forwards.as_dict(),
                  run=trainer.run_info, steps=trainer.step)  # fmt: skip
    return report


def main() -> None:
    """Three runs in these processes: FSDP2 for 4 steps, FSDP2 resumed from its step 2, DDP (``ACCELERATE_USE_FSDP``
    off); writes ``OUT/rank_<r>.json`` with one report per run."""
    argv, out = sys.argv[1:], sys.argv[sys.argv.index("--output_dir") + 1]
    reports = [run(argv + ["--output_dir", f"{out}/fsdp"], "fsdp")]
    reports.append(run(argv + ["--output_dir", f"{out}/resumed", "--resume_from", f"{out}/fsdp/checkpoint-2"], "resumed"))
    os.environ["ACCELERATE_USE_FSDP"] = "false"  # the same accelerate state, now DDP
    reports.append(run(argv + ["--output_dir", f"{out}/ddp"], "ddp"))
    with open(os.path.join(out, f"rank_{reports[0]['rank']}.json"), "w", encoding="utf-8") as f:
        json.dump(reports, f)


if __name__ == "__main__":
    main()
