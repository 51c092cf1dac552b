"""The LaViDa-R1 trainer (docs/design.md, "Training"): ``lavida train --config FILE.yaml [--field value ...]``.

Also ``accelerate launch [--multi_gpu --num_processes N] -m agents.trainer --config FILE.yaml``
(on CPU-only hosts with ``ACCELERATE_USE_CPU=1``: gloo): one process by default, DDP with the same code (model, optimizer and scheduler go through
``Accelerator.prepare``; gradients are averaged by DDP; only the main process writes logs
and checkpoints; each process samples its own ``prompts_per_step`` problems from RNG streams
seeded by ``(seed, rank)``). Quick SFT is the same trainer: ``lavida train --env ENV_ID
--max_steps N ...`` (no ``--config``) runs phase ``sft`` from :data:`agents.config.QUICK_SFT`;
``max_minutes`` / ``max_cpu_minutes`` stop any run early (it is checkpointed and its policy
saved, as at ``max_steps``).

One step, top to bottom (:meth:`Trainer.train`):

1. sample problems of the task mixture by weight; SFT steps (phase ``sft``, or the first
   ``sft_steps`` of phase ``rl`` at ``sft_learning_rate``) take reference solutions only;
2. RL steps score groups of ``num_generations`` rollouts by the envs (answer forcing; tree
   search for ``tree_search`` tasks) -- a fresh batch every ``updates_per_batch`` steps;
3. advantages ``gamma * A_distill + (1 - gamma) * A_grpo``; SFT rows (``A = sft_weight``)
   when ``regularizer: sft``;
4. log-likelihoods by ``likelihood`` with one mask seed per batch for the old, current and
   (``regularizer: kl``, a frozen copy of the initial policy) reference policy;
   :func:`agents.losses.lavida_loss` (clipped ratio when ``updates_per_batch > 1``);
   SFT steps use :func:`agents.losses.sft_loss` ``mean_b(-ELBO_b / n_b)``;
5. backward, gradient clipping, optimizer and scheduler step -- skipped, with a warning in
   the log, when the loss or the gradient norm is NaN/Inf (on any process);
6. log one row to ``output_dir/metrics.jsonl`` (TRL's GRPOTrainer names: ``reward``,
   ``reward_std``, ``frac_reward_zero_std``, ``completions/mean_length``, ``kl``,
   ``entropy``, ``clip_ratio``, ``learning_rate``; plus ``step``, ``reward/<task>``,
   ``accuracy/<task>``, ``frac_reward_zero_std/after_forcing``, ``forced_frac``,
   ``forcing_trigger_frac``, ``loss``, ``loss/pg``, ``loss/sft``, ``loss/kl``, ``nll/text``,
   ``nll/image``, ``grad_norm``, ``forwards/<phase>`` (this step's model forwards per phase that ran,
   :mod:`agents.collectives`), ``tokens_per_s`` (response positions of the step's rows /
   step seconds, all processes), ``time`` (seconds since the run began)); held-out greedy
   evaluation (``eval/reward/<task>``, ``eval/accuracy/<task>``) at step 0, every
   ``eval_every`` steps and at the end (none when ``eval_episodes`` is 0); checkpoints every ``save_every`` steps and at the end.

``completions/mean_length`` counts the positions the likelihood scores per free rollout row
(``policy.scored_mask``: an AR policy's tokens up to ``<eos>``; a diffusion response's text
and code positions). ``entropy`` is the per-token Monte-Carlo estimate ``mean_i(-ELBO_i / n_i)`` over the free
rollout rows (a masked-diffusion model exposes no exact per-position entropy of its
samples; TRL computes the exact per-token entropy of an autoregressive model's logits). The
collapse alarm (:class:`agents.metrics_log.CollapseAlarm`) watches ``reward`` and it.

Any :class:`agents.policy.TrainablePolicy` trains here; the loop calls only that Protocol's
members (``decoding``, ``rollout``, ``rollout_from`` for tree search, ``log_likelihood_terms``,
``scored_mask``, ``sft_rollouts``, ``save_pretrained``/``from_pretrained``). A policy without
answer forcing or tree search (``supports_forcing`` / ``supports_tree_search`` False) is refused
at start when the config asks for them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from tqdm import tqdm

from agents.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, save_checkpoint
from agents.config import DECODING_KEYS, TrainConfig, parse_args
from agents.eval_decoding import write_eval_decoding
from agents.losses import lavida_loss, sft_loss
from agents.metrics_log import CollapseAlarm, MetricsLog
from agents.rollout import rollout_metrics, sample_problems
from agents.policy import require_trainable
from agents.collectives import ForwardCounter, synced
from agents.distributed import (
    accumulation_plugin,
    build_reference,
    configure_deepspeed,
    counted_module,
    fsdp2_root_fixups,
    ignored_launch_warning,
    run_info,
    shard_on_cpu,
    single_process_launch_warning,
    split_launch_error,
)
from agents.sharded_state import gathered_for_rollouts, gathered_parameters
from agents.optim_step import clear_gradients, finish_step, micro_backward
from agents.train_setup import (
    PolicyLoadError,
    build_policy,
    check_capabilities,
    configure_policy,
    forward_attributes,
    lr_factor,
)
from agents.train_batch import (
    NLLMeter,
    TrainBatch,
    collect_rollouts,
    derive_seed,
    evaluate,
    likelihood,
    make_envs,
    rollout_advantages,
    set_decoding,
    sft_rollouts,
)

__all__ = ["Trainer", "main"]

logger = logging.getLogger(__name__)


def _mean_over_ranks(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the mean over the rows that have it (NaN-skipping); text values: the first one."""
    out: dict[str, Any] = {}
    for key in sorted({k for row in rows for k in row}):
        texts = [row[key] for row in rows if isinstance(row.get(key), str)]
        if texts:
            out[key] = texts[0]
            continue
        values = [float(row[key]) for row in rows if key in row and row[key] is not None]
        finite = [v for v in values if math.isfinite(v)]
        out[key] = sum(finite) / len(finite) if finite else float("nan")
    return out


class Trainer:
    """The LaViDa-R1 training loop over any ``TrainablePolicy`` (see the module docstring)."""

    def __init__(self, config: TrainConfig, policy: Any = None) -> None:
        self.config = c = config.validate()
        self.accelerator = acc = Accelerator(
            mixed_precision=c.mixed_precision, log_with=None if c.report_to == "none" else c.report_to,
            project_dir=c.output_dir, step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
            gradient_accumulation_plugin=accumulation_plugin(c.gradient_accumulation_steps),
        )  # fmt: skip
        launch_warning = single_process_launch_warning(acc.num_processes)
        if launch_warning and acc.is_main_process:
            logger.warning(launch_warning)
        split = split_launch_error(acc.num_processes)
        if split:
            raise RuntimeError(split)
        set_seed(c.seed)
        self.policy = policy if policy is not None else build_policy(c)
        configure_policy(self.policy, c)  # LoRA / gradient checkpointing of HF backbones
        check_capabilities(require_trainable(self.policy), c)
        set_decoding(self.policy, {k: getattr(c, k) for k in DECODING_KEYS})
        for task in c.tasks:
            set_decoding(self.policy, {"gen_length": c.decoding_for(task)["gen_length"]}, task)
        configure_deepspeed(acc, c.gradient_accumulation_steps, c.max_grad_norm)
        self.reference = self._frozen_reference(rebuild=policy is None) if c.regularizer == "kl" else None
        self._prepare(self.policy.model.to(acc.device))
        self._write_run_info()
        self.forwards = ForwardCounter().attach(counted_module(self.policy.model))  # per phase (agents.collectives)
        if self.reference is not None:
            self.forwards.attach(counted_module(self.reference.model))
        self.envs = make_envs(c, "train")
        self.sft_envs = self.envs if c.sft_difficulty is None else make_envs(c, "train", c.sft_difficulty)
        self._test_envs: dict[str, Any] | None = None
        rank = acc.process_index
        self.rngs: dict[str, Any] = {
            name: np.random.default_rng(derive_seed(c.seed, rank, k)) for k, name in enumerate(("problems", "sft", "forcing"))
        }
        if acc.num_processes > 1:  # the task of each row: one stream shared by all ranks (equal forwards per task)
            self.rngs["tasks"] = np.random.default_rng(derive_seed(c.seed, 4))
        self.rngs["sampling"] = torch.Generator(device=acc.device).manual_seed(derive_seed(c.seed, rank, 3))
        self.step, self.elapsed = 0, 0.0
        self.total_steps = c.max_steps + c.warm_start_steps
        self.alarm = CollapseAlarm(c.collapse_window)
        self._batches: list[TrainBatch] = []
        if c.resume_from:
            self.step, extra, local = load_checkpoint(
                c.resume_from, accelerator=acc, policy=self.policy, model=self.model, optimizer=self.optimizer,
                scheduler=self.scheduler, generators=self.rngs, trust_remote_code=c.trust_remote_code,
            )  # fmt: skip
            self.elapsed = float(extra.get("elapsed", 0.0))
            self.alarm.load_state_dict(extra.get("alarm", {}))
            self._batches = list(local.get("batches", []))
        self.log = MetricsLog(os.path.join(c.output_dir, "metrics.jsonl"), acc, self.step if c.resume_from else None)
        if acc.is_main_process and acc.trackers == [] and c.report_to != "none":
            acc.init_trackers("lavida", config={k: str(v) for k, v in c.to_dict().items()})

    def _prepare(self, model: torch.nn.Module) -> None:
        """Optimizer and scheduler over the trainable parameters; model, optimizer and scheduler through the backend."""
        c, acc = self.config, self.accelerator
        self.sharding = shard_on_cpu(acc, model)  # FSDP2 through torch's fully_shard where accelerate would not
        trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapter only
        optimizer = torch.optim.AdamW(trainable, lr=c.learning_rate, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(c, step))
        if self.sharding is not None:
            self.optimizer, self.scheduler = acc.prepare(optimizer, scheduler)
            self.model = model
            return
        with warnings.catch_warnings():  # torch renames broadcast_buffers; False (no buffer sync at all) is meant
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        fsdp2_root_fixups(self.model)  # accelerate's FSDP2 (GPU): the policy model is the root
        if self.model is not model:
            self.policy.model = forward_attributes(self.model)

    def _write_run_info(self) -> None:
        """``output_dir/run.json`` (main process): how the run really ran (:func:`agents.distributed.run_info`)."""
        acc = self.accelerator
        ignored = ignored_launch_warning(acc)
        self.run_info = {**run_info(acc, self.sharding, self.config.gradient_accumulation_steps), "warning": ignored}
        if acc.is_main_process:
            if ignored:
                logger.warning(ignored)
            os.makedirs(self.config.output_dir, exist_ok=True)
            with open(os.path.join(self.config.output_dir, "run.json"), "w", encoding="utf-8") as f:
                json.dump(self.run_info, f, indent=2)

    def _frozen_reference(self, rebuild: bool) -> Any:
        """The frozen initial policy for ``regularizer: kl``, prepared for the backend (:func:`agents.distributed.build_reference`)."""

        def load_again() -> Any:
            reference = build_policy(self.config)
            configure_policy(reference, self.config)
            return reference

        return build_reference(self.policy, self.accelerator, load_again if rebuild else None)

    # ----- the loop -------------------------------------------------------------------
    def train(self, stop_at: int | None = None) -> dict[str, float]:
        """Run until ``max_steps`` (or global step ``stop_at``); returns the last logged metrics."""
        c, acc = self.config, self.accelerator
        last: dict[str, float] = {}
        if self.step == 0 and c.eval_episodes > 0:  # the 'before' numbers
            self.log.write({"step": 0, **self.evaluate()})
        begin, cpu_begin = time.time() - self.elapsed, time.process_time()
        final = self.step == self.total_steps
        bar = tqdm(total=self.total_steps, initial=self.step, desc="lavida train", disable=not acc.is_main_process)
        self.model.train()
        while self.step < self.total_steps and (stop_at is None or self.step < stop_at):
            started, before = time.time(), dict(self.forwards.counts)
            sft_step = self.is_sft_step(self.step)
            with synced(acc.num_processes, acc.device):  # decoding loops keep the ranks in step
                # 1-3. sample problems -> rollouts scored by the envs -> advantages (+ SFT rows)
                if sft_step:
                    self._batches = [self._sft_batch() for _ in range(c.gradient_accumulation_steps)]
                elif self._rl_index() % c.updates_per_batch == 0:
                    self._batches = [self._rl_batch(micro) for micro in range(c.gradient_accumulation_steps)]
                # 4. loss and backward (micro-batches accumulate; a non-finite loss anywhere skips the step)
                metrics, finite = self._loss_and_backward(sft_step)
            # 5. clip and step (a non-finite gradient norm skips the update)
            metrics.update(self._optimizer_step(finite))
            self.step += 1
            # 6. log, evaluate, checkpoint
            # phases with forwards this step only: a phase's 0 would depend on what the process ran before (resume)
            metrics.update({f"forwards/{k}": float(n - before.get(k, 0)) for k, n in self.forwards.counts.items()
                            if n > before.get(k, 0)})  # fmt: skip
            metrics = _mean_over_ranks(gather_object([metrics]))
            metrics.update(step=self.step, time=time.time() - begin, cpu_time=time.process_time() - cpu_begin,
                           tokens_per_s=metrics.pop("tokens", 0.0) * acc.num_processes / max(time.time() - started, 1e-9))  # fmt: skip
            self._warn_if_collapsing(metrics, sft_step)
            final = self.step == self.total_steps or self._budget_spent(begin, cpu_begin)
            if c.eval_every and self.step % c.eval_every == 0 or final:
                metrics.update(self.evaluate() if c.eval_episodes else {})
            if self.step % c.logging_steps == 0 or "warning" in metrics or final:
                self.log.write(metrics)
            self.elapsed = time.time() - begin
            if c.save_every and self.step % c.save_every == 0 or final:
                self.save(checkpoint_dir(c.output_dir, self.step))
            bar.update(1)
            shown = {k: f"{metrics[k]:.3f}" for k in ("loss", "reward") if math.isfinite(metrics.get(k, math.nan))}
            bar.set_postfix(shown)  # SFT steps have no reward
            last = metrics
            if final:
                break
        bar.close()
        if final:
            self.save_policy(c.output_dir)
        return last

    def _budget_spent(self, begin: float, cpu_begin: float) -> bool:
        """Whether ``max_minutes`` (wall, whole run) or ``max_cpu_minutes`` (this process, this call) ran out on any process."""
        c = self.config
        if c.max_minutes is None and c.max_cpu_minutes is None:
            return False
        spent = (c.max_minutes is not None and time.time() - begin > 60 * c.max_minutes) or (
            c.max_cpu_minutes is not None and time.process_time() - cpu_begin > 60 * c.max_cpu_minutes
        )
        flag = torch.tensor([float(spent)], device=self.accelerator.device)
        return bool(self.accelerator.gather(flag).max() > 0)

    def is_sft_step(self, step: int) -> bool:
        """Whether global ``step`` trains on reference solutions only."""
        return self.config.phase == "sft" or step < self.config.sft_steps

    def _rl_index(self) -> int:
        return self.step - self.config.warm_start_steps

    # ----- 1-3: batches -----------------------------------------------------------------
    def _sft_rows(self, count: int) -> list:
        problems = sample_problems(self.config.task_weights, count, self.rngs["sft"], self.sft_envs, self.config.sft_pool,
                                   task_rng=self.rngs.get("tasks"))  # fmt: skip
        return sft_rollouts(self.policy, self.sft_envs, problems, list(self.config.tasks), self.config.sft_teacher_error)

    def _sft_batch(self) -> TrainBatch:
        rank = self.accelerator.process_index
        return TrainBatch(parts=[], advantages=None, sft=self._sft_rows(self.config.sft_per_step),
                          mask_seed=derive_seed(self.config.seed, rank, 1, self.step))  # fmt: skip

    def _rl_batch(self, micro: int) -> TrainBatch:
        c, rank = self.config, self.accelerator.process_index
        problems = sample_problems(c.task_weights, c.prompts_per_step, self.rngs["problems"], self.envs,
                                   task_rng=self.rngs.get("tasks"))  # fmt: skip
        with self.forwards.phase("rollout"), gathered_for_rollouts(self.model):  # sharded: gathered once, not per step
            parts = collect_rollouts(self.policy, self.envs, problems, c, forcing_rng=self.rngs["forcing"],
                                     generator=self.rngs["sampling"])  # fmt: skip
        batch = TrainBatch(
            parts=parts, advantages=rollout_advantages(parts, c.gamma, c.scale_rewards),
            sft=self._sft_rows(c.sft_per_step) if c.regularizer == "sft" else [],
            mask_seed=derive_seed(c.seed, rank, 2, self.step, micro), metrics=rollout_metrics(parts),
        )  # fmt: skip
        if c.updates_per_batch > 1:
            with torch.no_grad(), self.forwards.phase("likelihood/old"):
                batch.old_loglik = self._loglik(self.policy, [p.rollouts for p in parts], batch.mask_seed)[0].detach()
        return batch

    # ----- 4: loss ------------------------------------------------------------------------
    def _loglik(self, policy: Any, parts: list, seed: int, meter: NLLMeter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-likelihoods (R,) and scored positions per row (R,) of rollout parts (part k: mask seed (seed, k))."""
        lls, counts = [], []
        phase = "reference" if policy is self.reference else "likelihood"
        for k, rollouts in enumerate(parts):
            c = self.config
            with self.forwards.phase(phase):
                result = likelihood(policy, rollouts, c.likelihood, derive_seed(seed, k), c.likelihood_samples,
                                    c.prompt_mask_prob)  # fmt: skip
            if meter is not None:
                meter.add(rollouts, result)
            lls.append(result.loglik)
            counts.append(result.counts)
        return torch.cat(lls), torch.cat(counts)

    def _loss(self, batch: TrainBatch, sft_step: bool) -> tuple[torch.Tensor, dict[str, float]]:
        c, meter = self.config, NLLMeter()
        sft_ll, sft_counts = self._loglik(self.policy, batch.sft, derive_seed(batch.mask_seed, 1), meter) if batch.sft else (None, None)
        tokens = float(sft_counts.sum()) if sft_counts is not None else 0.0
        if sft_step:  # mean_b(-ELBO_b / n_b)
            loss = sft_loss(sft_ll, sft_counts)
            return loss, {"loss": loss.item(), "loss/sft": loss.item(), "tokens": tokens, **meter.metrics()}
        rollouts = [p.rollouts for p in batch.parts]
        loglik, counts = self._loglik(self.policy, rollouts, batch.mask_seed, meter)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self._loglik(self.reference, rollouts, batch.mask_seed)[0].to(loglik.device)
        terms = lavida_loss(
            loglik, batch.advantages.to(loglik.device), regularizer=c.regularizer, sft_loglik=sft_ll,
            sft_weight=c.sft_weight, ref_loglik=ref, beta=c.beta, token_counts=counts, sft_token_counts=sft_counts,
            loss_type=c.loss_type, max_length=int(counts.max()), old_loglik=batch.old_loglik,
            epsilon=c.epsilon, epsilon_high=c.epsilon_high,
        )  # fmt: skip
        free = ~torch.cat([p.forced for p in batch.parts]).to(loglik.device)
        per_token = (-loglik.detach() / counts.clamp(min=1))[free]
        entropy = per_token.mean().item() if bool(free.any()) else float("nan")
        metrics = {
            **batch.metrics, **meter.metrics(), "loss": terms.loss.item(), "loss/pg": terms.pg.item(),
            "loss/sft": terms.sft.item(), "loss/kl": terms.kl.item(), "entropy": entropy,
            "clip_ratio": terms.clip.get("clip_ratio", 0.0), "tokens": tokens + float(counts.sum()),
            "completions/mean_length": counts[free].double().mean().item() if bool(free.any()) else 0.0,
        }  # fmt: skip
        if self.reference is not None:
            metrics["kl"] = terms.kl_mean
        return terms.loss, metrics

    def _loss_and_backward(self, sft_step: bool) -> tuple[dict[str, float], bool]:
        acc, n = self.accelerator, len(self._batches)
        rows = []
        acc.step = 0  # accelerate's micro-batch count: the last of this step's n is the boundary
        for micro, batch in enumerate(self._batches):
            with acc.accumulate(self.model):  # no gradient sync until the boundary (DDP); one optimizer step per step
                loss, metrics = self._loss(batch, sft_step)
                rows.append(metrics)
                finite = torch.tensor([float(torch.isfinite(loss.detach()).all())], device=acc.device)
                if float(acc.gather(finite).min()) < 1:  # every process skips together (no hang)
                    logger.warning("step %d: non-finite loss on some process: step skipped", self.step + 1)
                    clear_gradients(self.model, self.optimizer)
                    return {**_mean_over_ranks(rows), "warning": "non-finite loss: step skipped"}, False
                micro_backward(acc, self.model, loss, boundary=micro == n - 1)
        return _mean_over_ranks(rows), True

    # ----- 5: optimizer step ---------------------------------------------------------------
    def _optimizer_step(self, finite: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"skipped": 0.0 if finite else 1.0, "learning_rate": self.scheduler.get_last_lr()[0]}
        if finite:  # agents.optim_step: one step at most, decided alike on every rank, gradients cleared
            out.update(finish_step(self.accelerator, self.model, self.optimizer, self.config.max_grad_norm))
        if "warning" in out:
            logger.warning("step %d: %s", self.step + 1, out["warning"])
        self.scheduler.step()  # the schedule follows the step count, updated or skipped
        return out

    # ----- 6: logging, evaluation, checkpoints -------------------------------------------
    def _warn_if_collapsing(self, metrics: dict[str, Any], sft_step: bool) -> None:
        if sft_step:
            return
        message = self.alarm.update(self.step, metrics.get("reward", float("nan")), metrics.get("entropy", float("nan")))
        if message:
            metrics["collapse_alarm"] = 1.0
            metrics["warning"] = message
            logger.warning(message)
            if self.accelerator.is_main_process:
                tqdm.write(message)

    def evaluate(self) -> dict[str, float]:
        """Greedy held-out reward/accuracy per task (``eval/...``), split over the processes."""
        acc, c = self.accelerator, self.config
        if self._test_envs is None:
            self._test_envs = make_envs(c, "test")
        with synced(acc.num_processes, acc.device), self.forwards.phase("eval"), gathered_for_rollouts(self.model):
            local = evaluate(self.policy, self._test_envs, c, acc.process_index, acc.num_processes)
        merged: dict[str, list] = {}
        for part in gather_object([local]):
            for task, results in part.items():
                merged.setdefault(task, []).extend(results)
        out = {}
        for task, results in sorted(merged.items()):
            out[f"eval/reward/{task}"] = float(np.mean([r for r, _ in results])) if results else float("nan")
            out[f"eval/accuracy/{task}"] = float(np.mean([ok for _, ok in results])) if results else float("nan")
        rewards = [v for k, v in out.items() if k.startswith("eval/reward/")]
        out["eval/reward"] = float(np.mean(rewards)) if rewards else float("nan")
        self.model.train()
        return out

    def save(self, directory: str) -> str:
        """Checkpoint the run at the current step (every process must call it)."""
        extra = {"elapsed": self.elapsed, "alarm": self.alarm.state_dict(), "config": self.config.to_dict()}
        path = save_checkpoint(
            directory, accelerator=self.accelerator, policy=self.policy, optimizer=self.optimizer,
            scheduler=self.scheduler, step=self.step, generators=self.rngs, extra=extra,
            local={"batches": self._batches},
        )  # fmt: skip
        if self.accelerator.is_main_process:  # lavida eval DIR decodes greedily; training decoding kept
            write_eval_decoding(path)
        self.accelerator.wait_for_everyone()
        return path

    def save_policy(self, directory: str) -> None:
        """Write the trained policy (main process) to ``directory``, greedy evaluation decoding as its default."""
        with gathered_parameters(self.policy.model):  # sharded runs: the whole model on every rank (collective)
            if self.accelerator.is_main_process:
                self.policy.save_pretrained(directory)
                write_eval_decoding(directory)  # agents.eval_decoding: training decoding kept beside it
        self.accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> int:
    """``lavida train``: one trainer for ``--config FILE.yaml`` runs and quick SFT (``--env``; agents.config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config, threads = parse_args(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lavida train: {exc}", file=sys.stderr)
        return 2
    if threads:
        torch.set_num_threads(threads)
    for flag, folder in (("--init_from", config.init_from), ("--resume_from", config.resume_from)):
        if folder and not os.path.isdir(folder):
            print(f"lavida train: {flag} {folder!r} is not a directory (pass a checkpoint or policy folder)", file=sys.stderr)
            return 2
    try:
        trainer = Trainer(config)
    except (CheckpointError, PolicyLoadError) as exc:  # a damaged checkpoint, or a policy folder that cannot load (named)
        print(f"lavida train: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        if not config.resume_from:
            raise
        print(f"lavida train: {exc}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
