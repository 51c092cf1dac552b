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
"""

from __future__ import annotations

import argparse
import time

import torch

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


def gradient_variance(model, seqs, response, estimator: str, num_samples: int, seeds: range) -> float:
    """Total variance (summed over parameters) of d mean_i loglik_i / d theta across mask seeds."""
    grads = []
    params = [p for p in model.parameters() if p.requires_grad]
    for seed in seeds:
        est = estimate_log_likelihood(model_fn_of(model), seqs, response, estimator=estimator, mask_seed=seed,
                                      mask_id=model.config.mask_token_id, num_samples=num_samples)
        grad = torch.autograd.grad(est.loglik.mean(), params, allow_unused=True)
        grads.append(torch.cat([g.flatten() for g in grad if g is not None]))
    stacked = torch.stack(grads)  # (S, num_params)
    return float(stacked.var(dim=0).sum())


def main(argv: list[str] | None = None) -> int:
    """Train (briefly) a tiny model, then print estimator variance/bias at equal forward passes."""
    parser = argparse.ArgumentParser(prog="lavida bench likelihood", description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=200, help="mask seeds per estimator")
    parser.add_argument("--passes", type=int, nargs="+", default=[2, 4], help="forward-pass budgets (even)")
    parser.add_argument("--fixed-t", type=float, nargs="*", default=[0.5],
                        help="also measure complementary with t fixed at these values (ablation)")
    parser.add_argument("--grad-seeds", type=int, default=30, help="0 skips the gradient variance")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    if any(b < 2 or b % 2 for b in args.passes):
        parser.error(f"--passes must be even numbers >= 2 (complementary uses pairs), got {args.passes}")
    torch.set_num_threads(args.threads)

    task = WalkTask(gen_length=args.gen_length)
    t0 = time.perf_counter()
    model = prepared_model(task, args.train_steps, args.seed, args.cache)
    prompts, responses = task.batch(args.sequences, torch.Generator().manual_seed(10_000 + args.seed))
    seqs = torch.cat([prompts, responses], dim=1)
    response = torch.zeros_like(seqs, dtype=torch.bool)
    response[:, task.prompt_len:] = True
    seeds = range(args.seeds)

    rows = [("mean_field", 1, 1, {})]
    for budget in args.passes:
        rows += [("random_mask", budget, budget, {}), ("complementary", budget, budget // 2, {})]
    rows += [(f"complementary t={t}", 2, 1, {"complementary_t": t}) for t in args.fixed_t]
    draws = {(name, passes): estimator_draws(model, seqs, response, name.split()[0], k, seeds, **options)
             for name, passes, k, options in rows}
    elbo = torch.cat([d for (name, _), d in draws.items() if name == "random_mask"]).mean(0)  # (N,)
    print(f"{args.sequences} sequences x {args.seeds} mask seeds, gen_length={args.gen_length}; "
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
        g_random = gradient_variance(model, seqs, response, "random_mask", 2, grad_seeds)
        g_comp = gradient_variance(model, seqs, response, "complementary", 1, grad_seeds)
        print(f"gradient variance at 2 passes ({args.grad_seeds} seeds): random_mask {g_random:.4g}, "
              f"complementary {g_comp:.4g}, ratio {g_comp / g_random:.3f}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
