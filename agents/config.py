"""``TrainConfig``: every knob of the LaViDa-R1 trainer in one dataclass (CLI + YAML).

Contract:

* One dataclass, every field with a default and a help string, parsed with
  ``transformers.HfArgumentParser`` from the command line and from YAML files
  (:func:`parse_config`: ``--config FILE.yaml`` sets the defaults, other flags override them;
  :func:`load_config` reads a file). A YAML file may name another one in ``base:`` (a path
  relative to itself); its keys are read first and then overridden key by key (a dict value
  such as ``task_decoding`` is replaced whole), so an ablation preset is its base plus the
  one change it ablates.
* ``tasks`` holds the task mixture as ``{task: weight}``; on the command line
  ``visual_math:1,grounding:1,image_edit:1`` or JSON. ``task_decoding`` holds per-task
  overrides of the sampler settings (``gen_length``, ``steps``, ``block_length``,
  ``temperature``, ``remasking``, ``threshold``); :meth:`TrainConfig.decoding_for` merges
  them over the shared defaults.
* The GRPO knobs shared with TRL's ``GRPOConfig`` keep TRL's names, meanings and defaults:
  ``num_generations`` (8), ``beta`` (0.0), ``epsilon`` (0.2), ``epsilon_high`` (None),
  ``scale_rewards`` ("group"; ``true``/``false`` map to "group"/"none"), ``loss_type``
  (grpo | bnpo | dr_grpo | dapo). One deliberate difference: our ``loss_type`` defaults to
  ``"sequence"`` (docs/design.md, "Training": ``-(1/N) sum_i A_i ELBO_i``; TRL's default ``"dapo"``
  is the same loss divided by the batch's mean response length).
* :meth:`TrainConfig.validate` raises ``ValueError`` naming the field, the value and the fix;
  parsing validates. The choice lists come from the code that owns them (loss types and
  regularizers: :mod:`agents.losses`; estimators: :mod:`agents.diffusion.likelihood`;
  remasking: :mod:`agents.diffusion.sampler`; tasks: :data:`lavida_envs.TASK_ENV_IDS`).
* Quick SFT is this config too: ``lavida train --env ENV_ID [--env ...] [--field value ...]``
  without ``--config`` starts from :data:`QUICK_SFT` (phase ``sft`` on the named envs' tasks);
  ``--env`` with ``--config`` only sets ``tasks``. Flags take either spelling
  (``--output_dir`` / ``--output-dir``); ``--lr``, ``--batch-size``, ``--init`` and
  ``--estimator`` are the quick-SFT names of ``learning_rate``, ``sft_per_step``,
  ``init_from`` and ``likelihood``. ``--steps`` is always the denoising steps; optimizer
  steps are ``--max_steps``.
* List fields (:func:`list_fields`: ``tree_search``, ``forcing_tasks``, ``tree_branch_steps``,
  ``lora_target_modules``) take space- or comma-separated items or ``[a, b]``; ``[]``, ``none``,
  an empty string or the bare flag empty them (``--tree_search '[]'`` turns tree search off).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import typing
from argparse import ArgumentTypeError
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser

from agents.cli_args import OneLineErrors, at_least, empty_means_none, int_items, nonempty
from agents.diffusion.likelihood import ESTIMATORS
from agents.diffusion.sampler import CACHE_MODES, REMASKING, check_threshold
from agents.losses import LOSS_TYPES, REGULARIZERS
from lavida_envs import ENVS, TASK_ENV_IDS

__all__ = [
    "DECODING_KEYS",
    "KNOWN_TASKS",
    "QUICK_SFT",
    "TaskDecoding",
    "TaskEnvKwargs",
    "TaskWeights",
    "TrainConfig",
    "as_list",
    "list_fields",
    "load_config",
    "parse_config",
]

#: Tasks the trainer can build envs for (their single-task env ids: ``lavida_envs.TASK_ENV_IDS``).
KNOWN_TASKS: tuple[str, ...] = tuple(TASK_ENV_IDS)
#: Sampler settings a task may override (LLaDA's names; docs/design.md, "Public API").
DECODING_KEYS: tuple[str, ...] = ("gen_length", "steps", "block_length", "temperature", "remasking", "threshold", "cache")
PHASES = ("sft", "rl")
LIKELIHOODS = ESTIMATORS
REMASKINGS = REMASKING
SCALE_REWARDS = ("group", "batch", "none")
SCHEDULERS = ("constant", "linear", "cosine")
#: Spellings of an empty list field besides '' and '[]' (``--tree_search none``, ``tree_search: none``).
EMPTY_LIST = ("none", "null")
#: ``lavida train --env ...`` without ``--config``: quick SFT of a fresh tiny policy on the envs' tasks.
QUICK_SFT: dict[str, Any] = dict(
    phase="sft", difficulty="1", image_size=128, max_steps=1000, sft_per_step=32, learning_rate=1e-3,
    weight_decay=0.01, warmup_steps=50, lr_scheduler_type="cosine", likelihood="random_mask",
    eval_every=0, eval_episodes=0, save_every=0, output_dir="runs/sft",
)  # fmt: skip


class TaskWeights(dict):
    """``{task: weight}`` from a dict, ``"a:1,b:2"`` or a JSON object string."""

    def __init__(self, value: Any = None) -> None:
        if value is not None and not isinstance(value, (str, dict)):
            value = dict(value)  # pairs (dataclasses.asdict rebuilds dicts this way)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = json.loads(text)
            else:
                value = {}
                for part in filter(None, (p.strip() for p in text.split(","))):
                    name, sep, weight = part.partition(":")
                    value[name.strip()] = weight.strip() if sep else 1.0
        try:
            super().__init__({str(k): float(v) for k, v in dict(value or {}).items()})
        except (TypeError, ValueError) as exc:
            fix = "write e.g. 'visual_math:1,grounding:1'"
            raise ValueError(f"TrainConfig.tasks={value!r}: cannot read task weights ({exc}); {fix}") from None


class TaskDecoding(dict):
    """``{task: {setting: value}}`` from a dict or a JSON object string."""

    field_name = "task_decoding"

    def __init__(self, value: Any = None) -> None:
        if value is not None and not isinstance(value, (str, dict)):
            value = dict(value)  # pairs (dataclasses.asdict rebuilds dicts this way)
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value or {}, dict) or not all(isinstance(v, dict) for v in (value or {}).values()):
            raise ValueError(f"{self.field_name} must map task -> {{setting: value}}, got {value!r}")
        super().__init__({str(k): dict(v) for k, v in (value or {}).items()})


class TaskEnvKwargs(TaskDecoding):
    """``{task: {env keyword: value}}`` (``env_kwargs``) from a dict or a JSON object string."""

    field_name = "env_kwargs"


def _field(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = MISSING,
    choices: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
) -> Any:
    """A dataclass field with a default (or default factory) and argparse help/choices/alias metadata."""
    metadata = {"help": help, **({"choices": list(choices)} if choices is not None else {})}
    if aliases:
        metadata["aliases"] = list(aliases)
    return field(default=default, default_factory=factory, metadata=metadata)


@dataclass
class TrainConfig:
    """All settings of one training run (phase ``sft`` or ``rl``) of the LaViDa-R1 trainer."""

    # ----- run -----------------------------------------------------------------------
    phase: str = _field("rl", "'sft' (reference solutions only) or 'rl' (the unified loss).", choices=PHASES)
    policy: str = _field(
        "diffusion",
        "'diffusion' (DiffusionPolicy.tiny), 'ar' (ARPolicy.tiny), 'hf-a2d:DIR' (a HF causal LM run as masked "
        "diffusion), 'hf-dllm:DIR' (a HF masked-diffusion LM; LLaDA-style, Dream-style when its config is Dream's), "
        "'hf-dream:DIR' (shifted logits), a checkpoint dir, or module:factory / file.py:factory.",
    )
    trust_remote_code: bool = _field(False, "Run the model code shipped in an hf-dllm:/hf-dream: folder (opt-in).")
    lora_r: int = _field(0, "HF backbones: LoRA rank through peft (0 = off: every weight trains); base weights frozen.")
    lora_alpha: float = _field(16.0, "LoRA scaling alpha (update scale alpha / r).")
    lora_dropout: float = _field(0.0, "Dropout on the LoRA branch.")
    lora_target_modules: list[str] = _field(
        factory=lambda: ["all-linear"],
        help="Modules LoRA adapts: 'all-linear' (every linear layer but the output head) or names, 'q_proj,v_proj'.",
    )
    gradient_checkpointing: bool = _field(
        True, "HF backbones: non-reentrant activation checkpointing (when the backbone supports it); false = off."
    )
    init_from: str | None = _field(
        None, "Checkpoint directory to start the weights from (e.g. the SFT run's output).", aliases=["--init"]
    )
    output_dir: str = _field("runs/lavida", "Where metrics.jsonl, checkpoints and the final policy are written.")
    seed: int = _field(0, "Seed of model init, problem draws, sampling, mask seeds and forcing coins.")
    resume_from: str | None = _field(None, "Checkpoint directory (output_dir/checkpoint-STEP) to continue exactly.")
    max_steps: int = _field(100, "Optimizer steps of this phase.")
    sft_steps: int = _field(0, "Phase 'rl' only: SFT warm-start steps run first, at sft_learning_rate.")
    max_minutes: float | None = _field(None, "Stop (checkpoint and save the policy) after this much wall time.")
    max_cpu_minutes: float | None = _field(None, "Stop (checkpoint and save the policy) after this much process CPU time.")
    # ----- tasks and envs ------------------------------------------------------------
    tasks: TaskWeights = _field(
        factory=lambda: TaskWeights({t: 1.0 for t in KNOWN_TASKS}),
        help="Task mixture {task: weight} (CLI: 'visual_math:1,grounding:1,image_edit:1'); every batch mixes tasks.",
    )
    difficulty: str = _field("mixed", "Env difficulty: a level '1'..'5' or 'mixed'.")
    sft_pool: int = _field(
        0, "SFT reference rows come only from the first sft_pool training problems of each task (0 = all): "
        "reference solutions for some problems, verifiable rewards for every RL prompt.",
    )
    sft_difficulty: str | None = _field(
        None, "Level the SFT reference rows come from (None = difficulty): SFT on an easier level, RL on a harder one."
    )
    sft_teacher_error: float = _field(
        0.0, "Fraction of the 55 one-digit addition facts the SFT teacher gets wrong by one (VisualMath levels 1-2 "
        "only; docs/testbed.md 'Imperfect references'): systematically wrong references, the verifier still true.",
    )
    image_size: int = _field(64, "Observation image size (pixels) of every env.")
    env_kwargs: TaskEnvKwargs = _field(
        factory=TaskEnvKwargs,
        help="Per-task gym.make keywords of the train and test envs (not split/difficulty), e.g. the CPU testbed levels "
        "'{\"grounding\": {\"grid\": 2, \"min_shapes\": 2, \"max_shapes\": 2, \"expression\": \"color\"}}' (docs/testbed.md).",
    )
    # ----- batch ---------------------------------------------------------------------
    prompts_per_step: int = _field(4, "Prompts (groups) sampled per RL step.")
    sft_per_step: int = _field(
        4, "SFT rows (reference solutions, same task mix) per step (quick SFT: its batch size).", aliases=["--batch-size"]
    )
    num_generations: int = _field(8, "Group size N: responses sampled per prompt (TRL's num_generations).")
    gradient_accumulation_steps: int = _field(1, "Micro-batches accumulated per optimizer step.")
    # ----- likelihood and loss -------------------------------------------------------
    likelihood: str = _field(
        "complementary", "ELBO estimator (LaViDa-R1: complementary).", choices=LIKELIHOODS, aliases=["--estimator"]
    )
    likelihood_samples: int = _field(1, "Mask samples (pairs for 'complementary') averaged per estimate.")
    prompt_mask_prob: float = _field(0.0, "d1's random prompt masking in 'mean_field' passes (d1: 0.15; 0 = off).")
    loss_type: str = _field(
        "sequence",
        help="Normalisation: 'sequence' -(1/N) sum A_i ELBO_i (docs/design.md); 'grpo' per-row token mean; 'bnpo'/'dapo' "
        "by response tokens; 'dr_grpo' by N * max length (TRL's names; TRL's default is 'dapo').",
        choices=LOSS_TYPES,
    )
    scale_rewards: str = _field("group", "TRL's: 'group' (true) / 'batch' std, or 'none' (false): only centre.")
    sft_weight: float = _field(1.0, "Advantage A of SFT rows in the unified loss (paper: 1).")
    gamma: float = _field(0.5, "Self-distillation mix A = gamma * A_distill + (1 - gamma) * A_grpo (paper 0.5).")
    regularizer: str = _field("sft", "'sft' rows (LaViDa-R1), 'kl' (beta * k3 KL) or 'none'.", choices=REGULARIZERS)
    beta: float = _field(0.0, "KL coefficient (TRL's beta); regularizer 'kl' needs beta > 0.")
    epsilon: float = _field(0.2, "Clip range of the importance ratio (TRL's epsilon); used when updates_per_batch > 1.")
    epsilon_high: float | None = _field(None, "Upper clip range (TRL's epsilon_high); None = epsilon.")
    updates_per_batch: int = _field(1, "Updates per rollout batch (TRL's num_iterations); > 1: clipped ratio.")
    # ----- answer forcing ------------------------------------------------------------
    answer_forcing: bool = _field(True, "Answer-forced (N+1)-th sample for groups all below forcing_threshold.")
    forcing_threshold: float = _field(0.5, "A group triggers forcing when every reward is below this (paper: 0.5).")
    forcing_prob: float = _field(0.1, "Chance a triggered group keeps its forced sample (paper: 0.1; 1.0 collapses).")
    forced_tokens_in_loss: bool = _field(False, "Whether forced answer tokens count in the forced row's likelihood.")
    forcing_tasks: list[str] = _field(
        factory=lambda: ["visual_math", "grounding"], help="Tasks with a gold answer to force ([], none or '': none)."
    )
    forcing_template: str = _field("<answer>{answer}</answer>", "Forced response suffix ('{answer}': the gold).")
    # ----- tree search ---------------------------------------------------------------
    tree_search: list[str] = _field(
        factory=lambda: ["image_edit"], help="Tasks sampled by tree search ([], none or '': off)."
    )
    tree_branch_steps: list[int] = _field(
        factory=lambda: [0, 8], help="Step each tree round branches at (0 = from scratch; paper [0, 8] of 64)."
    )
    # ----- sampling (LLaDA's names; per-task overrides in task_decoding) --------------
    gen_length: int = _field(64, "Response text positions (tasks without an override).")
    steps: int = _field(64, "Denoising steps per response.")
    block_length: int = _field(32, "Block length (one block if it does not divide; see DecodingConfig.plan).")
    temperature: float = _field(1.0, "Sampling temperature of rollouts (0 = greedy).")
    remasking: str = _field("low_confidence", "Which positions a step unmasks.", choices=REMASKINGS)
    threshold: float | None = _field(None, "Parallel threshold-decoding confidence (None = fixed schedule).")
    cache: str = _field(
        "none", "KV cache of diffusion rollouts: none (exact), prefix or dual (Fast-dLLM; see docs/rollouts.md).",
        choices=CACHE_MODES,
    )
    task_decoding: TaskDecoding = _field(
        factory=lambda: TaskDecoding({"grounding": {"gen_length": 160}, "image_edit": {"gen_length": 192}}),
        help="Per-task overrides of the sampling settings, e.g. '{\"grounding\": {\"gen_length\": 160}}'.",
    )
    # ----- optimisation --------------------------------------------------------------
    learning_rate: float = _field(
        1e-4, "Peak learning rate of this phase (paper: SFT 5e-6, RL 10x lower).", aliases=["--lr"]
    )
    sft_learning_rate: float = _field(1e-3, "Learning rate of the sft_steps warm start in phase 'rl'.")
    weight_decay: float = _field(0.0, "AdamW weight decay.")
    max_grad_norm: float = _field(1.0, "Gradient clipping norm (0 = off).")
    warmup_steps: int = _field(0, "Linear learning-rate warm-up steps.")
    lr_scheduler_type: str = _field("constant", "Learning-rate schedule after warm-up.", choices=SCHEDULERS)
    mixed_precision: str = _field("no", "accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    model_dtype: str = _field(
        "float32", "dtype trainable weights are held in (the optimizer's master copy): float32, or 'auto' (as the "
        "checkpoint stores them: a bf16 backbone then barely trains at small lr, warned); mixed_precision: bf16 computes "
        "in bf16.", choices=("float32", "bfloat16", "float16", "auto"),
    )  # fmt: skip
    save_dtype: str = _field(
        "auto", "dtype of saved backbone weights: 'auto' = the backbone's own as loaded (an 8B bf16 checkpoint stays "
        "16 GB; finer master weights go beside it, master_weights.safetensors, for exact resume).",
        choices=("auto", "float32", "bfloat16", "float16"),
    )  # fmt: skip
    # ----- logging, evaluation, checkpoints ------------------------------------------
    logging_steps: int = _field(1, "Write metrics.jsonl every this many steps.")
    report_to: str = _field("none", "accelerate trackers besides metrics.jsonl: 'none', 'tensorboard', 'wandb'.")
    eval_every: int = _field(50, "Held-out evaluation every this many steps (0 = only at the end).")
    eval_episodes: int = _field(32, "Held-out (test split) problems per task per evaluation.")
    save_every: int = _field(100, "Checkpoint every this many steps (0 = only at the end).")
    collapse_window: int = _field(20, "Steps over which falling reward and entropy raise the collapse alarm.")

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, TaskWeights):
            self.tasks = TaskWeights(self.tasks)
        if not isinstance(self.task_decoding, TaskDecoding):
            self.task_decoding = TaskDecoding(self.task_decoding)
        if not isinstance(self.env_kwargs, TaskEnvKwargs):
            self.env_kwargs = TaskEnvKwargs(self.env_kwargs)
        if isinstance(self.scale_rewards, bool):
            self.scale_rewards = "group" if self.scale_rewards else "none"
        elif isinstance(self.scale_rewards, str) and self.scale_rewards.lower() in ("true", "false"):
            self.scale_rewards = "group" if self.scale_rewards.lower() == "true" else "none"
        self.difficulty = str(self.difficulty)
        if self.sft_difficulty is not None:
            self.sft_difficulty = str(self.sft_difficulty)
        for name, item_type in list_fields().items():
            setattr(self, name, as_list(name, getattr(self, name), item_type))

    # ----- derived views ---------------------------------------------------------------
    @property
    def task_weights(self) -> dict[str, float]:
        """Normalised mixture weights (sum 1) of the tasks with weight > 0."""
        total = sum(w for w in self.tasks.values() if w > 0)
        return {t: w / total for t, w in self.tasks.items() if w > 0}

    def decoding_for(self, task: str) -> dict[str, Any]:
        """Sampler settings of ``task``: the shared fields with its ``task_decoding`` overrides."""
        settings = {key: getattr(self, key) for key in DECODING_KEYS}
        settings.update(self.task_decoding.get(task, {}))
        return settings

    @property
    def warm_start_steps(self) -> int:
        """SFT steps that run before the RL steps (``sft_steps`` in phase 'rl'; 0 in phase 'sft')."""
        return self.sft_steps if self.phase == "rl" else 0

    @property
    def forcing_tasks_used(self) -> list[str]:
        """Tasks of the mixture whose RL groups may be answer-forced ([] in phase 'sft', or forcing off)."""
        if self.phase != "rl" or not self.answer_forcing or self.forcing_prob <= 0:
            return []
        return [t for t in self.forcing_tasks if t in self.task_weights]

    @property
    def tree_tasks_used(self) -> list[str]:
        """Tasks of the mixture rolled out by tree search ([] in phase 'sft')."""
        return [t for t in self.tree_search if t in self.task_weights] if self.phase == "rl" else []

    def uses_tree_search(self, task: str) -> bool:
        """Whether ``task`` rolls out by tree search."""
        return task in self.tree_search

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able dict of every field (saved with checkpoints and results)."""
        out = asdict(self)
        out["tasks"], out["task_decoding"] = dict(self.tasks), {k: dict(v) for k, v in self.task_decoding.items()}
        out["env_kwargs"] = {k: dict(v) for k, v in self.env_kwargs.items()}
        return out

    # ----- validation ------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad field, its value and the fix; return self."""
        _check_choice("phase", self.phase, PHASES)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        _check_choice("regularizer", self.regularizer, REGULARIZERS)
        _check_choice("loss_type", self.loss_type, LOSS_TYPES)
        _check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS + ("true", "false"))
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _check_choice("model_dtype", self.model_dtype, ("float32", "bfloat16", "float16", "auto"))
        _check_choice("save_dtype", self.save_dtype, ("auto", "float32", "bfloat16", "float16"))
        for name in ("max_steps", "prompts_per_step", "num_generations", "likelihood_samples",
                     "updates_per_batch", "gradient_accumulation_steps", "logging_steps", "image_size"):
            _check_int(name, getattr(self, name), minimum=1)
        counts = ("seed", "sft_steps", "sft_per_step", "sft_pool", "eval_every", "eval_episodes", "save_every", "warmup_steps",
                  "collapse_window")  # fmt: skip
        for name in counts:
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_minutes", "max_cpu_minutes"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0 or None")
        for name in ("difficulty", "sft_difficulty"):
            value = getattr(self, name)
            if value is not None and str(value) != "mixed" and str(value) not in {"1", "2", "3", "4", "5"}:
                same = " (or None: the same as difficulty)" if name == "sft_difficulty" else ""
                _fail(name, value, f"use a level 1..5 or 'mixed'{same}")
        self._validate_tasks()
        self._validate_teacher()
        self._validate_loss()
        self._validate_forcing()
        for task in self.tasks:
            self._validate_decoding(task)
        self._validate_tree()
        return self

    def _validate_tasks(self) -> None:
        if not self.tasks:
            _fail("tasks", dict(self.tasks), "name at least one task, e.g. 'visual_math:1'")
        unknown = sorted(set(self.tasks) - set(KNOWN_TASKS))
        if unknown:
            _fail("tasks", dict(self.tasks), f"unknown task(s) {unknown}; known: {list(KNOWN_TASKS)}")
        if any(w < 0 for w in self.tasks.values()) or not any(w > 0 for w in self.tasks.values()):
            _fail("tasks", dict(self.tasks), "weights must be >= 0 with at least one > 0")
        for name in ("forcing_tasks", "tree_search"):
            unknown = sorted(set(getattr(self, name)) - set(KNOWN_TASKS))
            if unknown:
                _fail(name, getattr(self, name), f"unknown task(s) {unknown}; known: {list(KNOWN_TASKS)}")
        for task, kwargs in self.env_kwargs.items():
            if task not in KNOWN_TASKS:
                _fail("env_kwargs", {task: kwargs}, f"unknown task {task!r}; known: {list(KNOWN_TASKS)}")
            fixed = sorted(set(kwargs) & {"split", "difficulty"})
            if fixed:
                _fail(f"env_kwargs.{task}", kwargs, f"{fixed} are set by the trainer (difficulty: the difficulty field)")
        for task, overrides in self.task_decoding.items():
            if task not in KNOWN_TASKS:
                _fail("task_decoding", {task: overrides}, f"unknown task {task!r}; known: {list(KNOWN_TASKS)}")
            bad = sorted(set(overrides) - set(DECODING_KEYS))
            if bad:
                _fail(f"task_decoding.{task}", overrides, f"unknown setting(s) {bad}; allowed: {list(DECODING_KEYS)}")

    def _validate_teacher(self) -> None:
        # docs/testbed.md, "Imperfect references": the teacher only knows level 1-2 column sums
        error = self.sft_teacher_error
        if isinstance(error, bool) or not isinstance(error, (int, float)) or not 0.0 <= error <= 1.0:
            _fail("sft_teacher_error", error, "must be a fraction in [0, 1]")
        if error == 0:
            return
        tasks = sorted(t for t, w in self.tasks.items() if w > 0)
        level = self.sft_difficulty if self.sft_difficulty is not None else self.difficulty
        if tasks != ["visual_math"] or str(level) not in ("1", "2"):
            _fail("sft_teacher_error", error, f"needs tasks visual_math only at SFT level 1 or 2 (got tasks {tasks}, "
                  f"level {level!r}): the teacher only knows carry-free column sums")

    def _validate_loss(self) -> None:
        for name in ("learning_rate", "sft_learning_rate"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        if not 0.0 <= self.prompt_mask_prob < 1.0:
            _fail("prompt_mask_prob", self.prompt_mask_prob, "must be in [0, 1)")
        if self.prompt_mask_prob > 0 and self.likelihood != "mean_field":
            _fail("prompt_mask_prob", self.prompt_mask_prob, "prompt masking is a 'mean_field' option (d1); set 0")
        if not 0.0 <= self.gamma <= 1.0:
            _fail("gamma", self.gamma, "must be in [0, 1]")
        for name in ("sft_weight", "beta", "weight_decay", "max_grad_norm", "epsilon"):
            if not getattr(self, name) >= 0:
                _fail(name, getattr(self, name), "must be >= 0")
        if self.epsilon_high is not None and not self.epsilon_high >= 0:
            _fail("epsilon_high", self.epsilon_high, "must be >= 0 or None")
        _check_int("lora_r", self.lora_r, minimum=0)
        if not self.lora_alpha > 0:
            _fail("lora_alpha", self.lora_alpha, "must be > 0 (e.g. 2 * lora_r)")
        if not 0.0 <= self.lora_dropout < 1.0:
            _fail("lora_dropout", self.lora_dropout, "must be in [0, 1)")
        if self.lora_r and not self.lora_target_modules:
            _fail("lora_target_modules", self.lora_target_modules, "name modules, e.g. 'q_proj,v_proj', or 'all-linear'")
        if "all-linear" in self.lora_target_modules and len(self.lora_target_modules) > 1:
            _fail("lora_target_modules", self.lora_target_modules, "'all-linear' stands alone; or name the modules")
        if self.regularizer == "kl" and self.beta <= 0:
            _fail("beta", self.beta, "regularizer 'kl' needs beta > 0 (e.g. 0.04)")
        if self.regularizer == "sft" and self.phase == "rl" and self.sft_per_step < 1:
            _fail("sft_per_step", self.sft_per_step, "regularizer 'sft' needs SFT rows (>= 1); or regularizer 'none'")
        if self.phase == "sft" and self.sft_per_step < 1:
            _fail("sft_per_step", self.sft_per_step, "phase 'sft' trains on SFT rows only; set sft_per_step >= 1")

    def _validate_forcing(self) -> None:
        for name in ("forcing_threshold", "forcing_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(name, getattr(self, name), "must be in [0, 1]")
        if "image_edit" in self.forcing_tasks:
            _fail("forcing_tasks", self.forcing_tasks, "image_edit has no gold answer to force; remove it")
        if "{answer}" not in self.forcing_template:
            _fail("forcing_template", self.forcing_template, "must contain '{answer}'")

    def _validate_decoding(self, task: str) -> None:
        d, overrides = self.decoding_for(task), self.task_decoding.get(task, {})

        def label(key: str) -> str:
            return f"task_decoding.{task}.{key}" if key in overrides else key

        for key in ("gen_length", "steps", "block_length"):
            _check_int(label(key), d[key], minimum=1)
        if not (isinstance(d["temperature"], (int, float)) and d["temperature"] >= 0):
            _fail(label("temperature"), d["temperature"], "must be a number >= 0")
        _check_choice(label("remasking"), d["remasking"], REMASKINGS)
        try:
            check_threshold(d["threshold"])
        except (TypeError, ValueError):
            _fail(label("threshold"), d["threshold"], "must be in (0, 1] or None")
        _check_choice(label("cache"), d["cache"], CACHE_MODES)

    def _validate_tree(self) -> None:
        steps = self.tree_branch_steps
        if self.tree_search and not steps:
            _fail("tree_branch_steps", steps, "tree search needs at least one round, e.g. [0, 8]")
        if steps and steps[0] != 0:
            _fail("tree_branch_steps", steps, "the first round samples from scratch: start with 0, e.g. [0, 8]")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            _fail("tree_branch_steps", steps, "must be strictly increasing, e.g. [0, 8]")
        for task in self.tree_search:
            total = self.decoding_for(task)["steps"]
            if steps and steps[-1] >= total:
                _fail("tree_branch_steps", steps, f"every branch step must be < steps ({total}) of tree task {task}")


@functools.lru_cache(maxsize=None)
def list_fields() -> dict[str, type]:
    """Every list-valued TrainConfig field and the type of its items."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: typing.get_args(hints[f.name])[0] for f in fields(TrainConfig) if typing.get_origin(hints[f.name]) is list}


def as_list(name: str, value: Any, item_type: type) -> list[Any]:
    """A list field's value from YAML or the command line: a list, ``'a,b'``, ``'[a, b]'``; ``[]``, ``none``, ``''`` = empty."""
    if value is None:
        return []
    parts: list[Any] = []
    for item in [value] if isinstance(value, str) else list(value):
        if not isinstance(item, str):
            parts.append(item)
            continue
        text = item.strip()
        text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        parts += [p.strip().strip("'\"") for p in text.split(",") if p.strip().strip("'\"")]
    if len(parts) == 1 and isinstance(parts[0], str) and parts[0].lower() in EMPTY_LIST:
        return []
    out = []
    for part in parts:
        exact = not isinstance(part, (bool, list, dict)) and not (item_type is int and isinstance(part, float))
        try:
            if not exact:
                raise TypeError(part)
            out.append(item_type(part))
        except (TypeError, ValueError):
            kind = "ints, e.g. '0,8'" if item_type is int else f"{item_type.__name__} items"
            _fail(name, value, f"cannot read {part!r}: write {kind}, or '[]' / none for an empty list")
    return out


def _fail(name: str, value: Any, fix: str) -> None:
    raise ValueError(f"TrainConfig.{name}={value!r}: {fix}")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(name, value, f"choose one of {list(choices)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"must be an int >= {minimum}")


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of a YAML config, with its ``base:`` chain merged underneath."""
    path = os.path.abspath(path)
    if path in seen:
        raise ValueError(f"{path}: 'base' chain loops back to itself ({' -> '.join(seen + (path,))})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping of field: value, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _read_yaml(os.path.join(os.path.dirname(path), str(base)), seen + (path,))
    merged.update(data)
    return merged


def _check_keys(data: dict[str, Any], source: str) -> None:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; run `lavida train --help` for the list")


def load_config(path: str, **overrides: Any) -> TrainConfig:
    """A validated ``TrainConfig`` from a YAML file (its ``base:`` chain merged), then ``overrides``."""
    data = _read_yaml(path)
    data.update(overrides)
    _check_keys(data, path)
    (config,) = HfArgumentParser(TrainConfig).parse_dict(data)
    try:
        return config.validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def env_tasks(env_id: str) -> dict[str, float]:
    """The trainer's task mixture of a registered env id (``LaViDa/MultiTask-v0``: every task, equal weights)."""
    entry = next((e for e in ENVS if e.env_id == env_id), None)
    if entry is None:
        raise ValueError(f"--env {env_id!r}: not a LaViDa env id; choose one of {[e.env_id for e in ENVS]}")
    return {entry.task: 1.0} if entry.task is not None else {task: 1.0 for task in KNOWN_TASKS}


def _flag_names(argv: Sequence[str]) -> set[str]:
    return {a.split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


class _TrainParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser with one-line usage errors (agents.cli_args)."""


def build_parser(defaults: dict[str, Any] | None = None) -> HfArgumentParser:
    """The ``lavida train`` parser: every TrainConfig field plus ``--config``, ``--env`` and ``--threads``."""
    parser = _TrainParser(
        TrainConfig, prog="lavida train",
        description="Train with the LaViDa-R1 trainer: --config FILE.yaml (other flags override it), or quick SFT "
        "with --env ENV_ID (no --config: phase sft from agents.config.QUICK_SFT).",
    )  # fmt: skip
    parser.add_argument("--config", default=None, type=nonempty, help="YAML file of field: value (optional 'base: other.yaml').")
    parser.add_argument("--env", action="append", default=None, metavar="ENV_ID", type=nonempty,
                        help="train on this env's task(s) (repeat for an equal mix); without --config: quick SFT")  # fmt: skip
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (torch.set_num_threads)")
    for action in parser._actions:  # list fields: '--tree_search' alone, '[]', none or '' empties them
        if action.dest in list_fields() and action.option_strings:
            action.type, action.nargs = int_items if list_fields()[action.dest] is int else empty_means_none, "*"
        elif isinstance(action.type, type) and issubclass(action.type, TaskDecoding):  # '' = no per-task entries
            action.type = _per_task(action.type)
        elif action.dest == "tasks":
            action.type = _task_weights
        elif action.type is str and not action.choices:  # an empty path, spec or name is a usage error
            action.type = nonempty
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def _task_weights(text: str) -> TaskWeights:
    """``--tasks`` as task weights (argparse type); an empty mixture is refused here, before ``--env`` sets one."""
    if not text.strip():
        raise ArgumentTypeError(f"needs at least one task, e.g. 'visual_math:1', got {text!r}")
    try:
        return TaskWeights(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


def _per_task(kind: type[TaskDecoding]) -> Any:
    """The argparse type of a per-task mapping field (``task_decoding``, ``env_kwargs``): a JSON object, '' for none."""

    def read(text: str) -> TaskDecoding:
        try:
            return kind(text)
        except ValueError as exc:
            fix = "write a JSON object of task -> {key: value}, e.g. '{\"grounding\": {\"gen_length\": 160}}', or '' for none"
            raise ArgumentTypeError(f"cannot read {text!r} ({exc}); {fix}") from None

    read.empty_ok = True  # type: ignore[attr-defined]
    return read


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """A validated ``TrainConfig`` from ``argv`` (module docstring): ``--config FILE.yaml`` or ``--env`` first, flags override."""
    return parse_args(argv)[0]


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, int | None]:
    """:func:`parse_config`'s config and the ``--threads`` value (None: torch's default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = _flag_names(argv)
    config_path = None
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path")
        config_path = argv[at + 1]
        argv = argv[:at] + argv[at + 2 :]
    quick = config_path is None and "__env" in names
    if quick and "__steps" in names and "__max_steps" not in names:
        raise ValueError(
            "--steps is the denoising steps per response (in every lavida train command); "
            "for the number of optimizer steps of quick SFT write --max_steps N"
        )
    defaults: dict[str, Any] = dict(QUICK_SFT) if quick else {}
    if config_path is not None:
        defaults = _read_yaml(config_path)
        _check_keys(defaults, config_path)
    parser = build_parser(defaults)
    config, extra = parser.parse_args_into_dataclasses(argv)[:2]
    if extra.env:
        tasks: dict[str, float] = {}
        for env_id in extra.env:
            tasks.update(env_tasks(env_id))
        config.tasks = TaskWeights(tasks)
        if quick and "__gen_length" in names:  # quick SFT: --gen_length is every trained task's length
            config.task_decoding = TaskDecoding(
                {t: {k: v for k, v in d.items() if k != "gen_length" or t not in tasks} for t, d in config.task_decoding.items()}
            )
    return config.validate(), extra.threads
