"""``lavida bench likelihood``: variance and bias of the ELBO estimators at equal forward passes.

Model and data: the tiny ``DiffusionModel`` briefly trained on the synthetic walk task of
``evaluation.bench_rollout`` (``--train-steps 0`` = random init). For ``--sequences`` fixed
(prompt, response) pairs and ``--seeds`` mask seeds, each estimator's per-sequence estimate is
drawn once per seed; at each pass budget B (``--passes``): ``random_mask`` with K = B samples,
``complementary`` with B/2 pairs, and ``mean_field`` (1 pass, no mask randomness). Printed per
estimator: mean log-likelihood per sequence, its bias against the ELBO (the mean of all
``random_mask`` draws, unbiased for it), the mask variance (variance over seeds, averaged over
sequences), and the ratio to ``random_mask`` at the same budget (goal: complementary <= 0.5).
Also the variance of the gradient of the batch log-likelihood (summed over parameters) over
``--grad-seeds`` seeds at budget 2; ``--fixed-t`` adds complementary with a fixed t (ablation).

``--policy DIR`` measures a trained :class:`~agents.diffusion.policy.DiffusionPolicy` checkpoint
instead, on the reference solutions of ``--env`` (test split, ``--difficulty``, ``--image-size``:
real prompts with images, text and image-code responses), through ``policy.log_likelihood``.
"""

from __future__ import annotations

import argparse
import time

import torch

from agents.cli_args import ArgumentParser, at_least, in_range, nonempty
from agents.diffusion.likelihood import estimate_log_likelihood
from agents.diffusion.masking import row_seed
from evaluation.bench_rollout import WalkTask, add_model_arguments, model_fn_of, prepared_model
from evaluation.throughput import record


def estimator_draws(model, seqs, response, estimator: str, num_samples: int, seeds: range, chunk: int = 1024,
                    **options):
    """Estimates (S, N) of each sequence's log-likelihood, one row per mask seed (rows batched)."""
    n = seqs.shape[0]
    rows_seqs = seqs.repeat(len(seeds), 1)  # seed-major: row s * n + i
    rows_resp = response.repeat(len(seeds), 1)
    row_seeds = torch.tensor([row_seed(s, i) for s in seeds for i in range(n)], dtype=torch.long)
    out = []
    with torch.no_grad():
        for start in range(0, rows_seqs.shape[0], chunk):
            part = slice(start, start + chunk)
            est = estimate_log_likelihood(model_fn_of(model), rows_seqs[part], rows_resp[part], estimator=estimator,
                                          mask_seed=row_seeds[part], mask_id=model.config.mask_token_id,
                                          num_samples=num_samples, **options)
            out.append(est.loglik)
    return torch.cat(out).view(len(seeds), n)


def walk_loglik(model, seqs, response):
    """``loglik(estimator, num_samples, seed) -> (N,)`` of the walk model (with gradients)."""

    def loglik(estimator: str, num_samples: int, seed: int) -> torch.Tensor:
        return estimate_log_likelihood(model_fn_of(model), seqs, response, estimator=estimator, mask_seed=seed,
                                       mask_id=model.config.mask_token_id, num_samples=num_samples).loglik

    return loglik


def policy_loglik(policy, batch):
    """``loglik(estimator, num_samples, seed) -> (N,)`` of a policy's reference-solution batch."""

    def loglik(estimator: str, num_samples: int, seed: int) -> torch.Tensor:
        return policy.log_likelihood(batch, estimator, seed, num_samples)

    return loglik


def policy_draws(loglik, estimator: str, num_samples: int, seeds: range) -> torch.Tensor:
    """Estimates (S, N), one row per mask seed, through ``loglik`` (no gradients)."""
    with torch.no_grad():
        return torch.stack([loglik(estimator, num_samples, seed) for seed in seeds])


def gradient_variance(model, loglik, estimator: str, num_samples: int, seeds: range) -> float:
    """Total variance (summed over parameters) of d mean_i loglik_i / d theta across mask seeds."""
    grads = []
    params = [p for p in model.parameters() if p.requires_grad]
    for seed in seeds:
        grad = torch.autograd.grad(loglik(estimator, num_samples, seed).mean(), params, allow_unused=True)
        grads.append(torch.cat([g.flatten() for g in grad if g is not None]))
    stacked = torch.stack(grads)  # (S, num_params)
    return float(stacked.var(dim=0).sum())


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lavida bench likelihood", description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=at_least(1), default=16)
    parser.add_argument("--seeds", type=at_least(1), default=200, help="mask seeds per estimator")
    parser.add_argument("--passes", type=at_least(2), nargs="+", default=[2, 4], help="forward-pass budgets (even)")
    parser.add_argument("--fixed-t", type=in_range(0.0, 1.0, low_open=True), nargs="*", default=[0.5],
                        help="also measure complementary with t fixed at these values (ablation)")
    parser.add_argument("--grad-seeds", type=at_least(0), default=30, help="0 skips the gradient variance")
    parser.add_argument("--policy", default=None, type=nonempty, help="a DiffusionPolicy checkpoint dir (default: the walk model)")
    parser.add_argument("--env", default="LaViDa/MultiTask-v0", type=nonempty, help="with --policy: env of the reference solutions")
    parser.add_argument("--difficulty", default="1", type=nonempty, help="with --policy: env difficulty")
    parser.add_argument("--image-size", type=at_least(8), default=64, help="with --policy: env image size")
    add_model_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench likelihood`` command line; bad values exit 2 with one line naming the flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    if any(b < 2 or b % 2 for b in args.passes):
        parser.error(f"--passes must be even numbers >= 2 (complementary uses pairs), got {args.passes}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Train (briefly) a tiny model, then print estimator variance/bias at equal forward passes."""
    parser = _parser()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.policy:
        try:
            model, loglik, what = _policy_setup(args)
        except (FileNotFoundError, ValueError) as exc:  # not a checkpoint, unknown env or difficulty
            parser.error(str(exc))
    else:
        task = WalkTask(gen_length=args.gen_length)
        model = prepared_model(task, args.train_steps, args.seed, args.cache)
        prompts, responses = task.batch(args.sequences, torch.Generator().manual_seed(10_000 + args.seed))
        seqs = torch.cat([prompts, responses], dim=1)
        response = torch.zeros_like(seqs, dtype=torch.bool)
        response[:, task.prompt_len:] = True
        loglik, what = walk_loglik(model, seqs, response), f"walk task, gen_length={args.gen_length}"
    seeds = range(args.seeds)

    rows = [("mean_field", 1, 1, {})]
    for budget in args.passes:
        rows += [("random_mask", budget, budget, {}), ("complementary", budget, budget // 2, {})]
    if args.policy:  # the policy's log_likelihood has no fixed-t option
        draws = {(name, passes): policy_draws(loglik, name, k, seeds) for name, passes, k, _ in rows}
    else:
        rows += [(f"complementary t={t}", 2, 1, {"complementary_t": t}) for t in args.fixed_t]
        draws = {(name, passes): estimator_draws(model, seqs, response, name.split()[0], k, seeds, **options)
                 for name, passes, k, options in rows}
    elbo = torch.cat([d for (name, _), d in draws.items() if name == "random_mask"]).mean(0)  # (N,)
    print(f"{args.sequences} sequences x {args.seeds} mask seeds, {what}; "
          f"ELBO (random_mask mean) = {float(elbo.mean()):.3f} per sequence")
    print(f"{'estimator':20s} {'passes':>6s} {'mean':>9s} {'bias vs ELBO':>13s} {'variance':>10s} {'/ random_mask':>14s}")
    for (name, passes), d in draws.items():
        variance = float(d.var(dim=0).mean())
        bias = float((d.mean(0) - elbo).mean())
        reference = draws.get(("random_mask", passes))
        ratio = f"{variance / float(reference.var(dim=0).mean()):.3f}" if reference is not None else "-"
        print(f"{name:20s} {passes:6d} {float(d.mean()):9.3f} {bias:13.3f} {variance:10.3f} {ratio:>14s}")
        if name == "complementary" and reference is not None:
            ratio_value = variance / float(reference.var(dim=0).mean())
            record("likelihood", f"complementary variance, {passes} passes", variance, "", ratio_value, "random_mask")
    if args.grad_seeds:
        grad_seeds = range(args.grad_seeds)
        g_random = gradient_variance(model, loglik, "random_mask", 2, grad_seeds)
        g_comp = gradient_variance(model, loglik, "complementary", 1, grad_seeds)
        print(f"gradient variance at 2 passes ({args.grad_seeds} seeds): random_mask {g_random:.4g}, "
              f"complementary {g_comp:.4g}, ratio {g_comp / g_random:.3f}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


def _policy_setup(args: argparse.Namespace):
    """(model, loglik, description) for ``--policy``: reference solutions of ``--env``'s test split."""
    from agents.diffusion.policy import DiffusionPolicy
    from agents.sft import build_sft_batch, sft_examples

    policy = DiffusionPolicy.from_pretrained(args.policy)
    policy.model.eval()
    difficulty = int(args.difficulty) if args.difficulty.isdigit() else args.difficulty
    examples = sft_examples(args.env, split="test", difficulty=difficulty, image_size=args.image_size)
    pairs = [next(examples) for _ in range(args.sequences)]
    batch = build_sft_batch(policy, [p[0] for p in pairs], [p[1] for p in pairs])
    what = f"{args.policy} on {args.env} test reference solutions (difficulty {args.difficulty})"
    return policy.model, policy_loglik(policy, batch), what


if __name__ == "__main__":
    raise SystemExit(main())
