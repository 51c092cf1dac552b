"""``lavida bench rollout``: masked-diffusion sampler throughput: one token per step vs KV caches and threshold decoding.

Model: the project's ``DiffusionModel`` (agents.diffusion.model) at a tiny size, briefly trained
(``--train-steps``) with the complementary-mask ELBO on a synthetic "walk" task, so its confidences are
realistic: the prompt is random letters; the response starts after the prompt's last letter and
moves +1 (p=0.9) or +2 (p=0.1) letters per position (mod the alphabet). Decoders are rows of
``METHODS`` (name -> function returning tokens generated and model calls), so other policies
(e.g. the AR baseline) can be added to the same table. Prints, per method: generated tokens/s, speedup
over one token per step, batched model calls, mean denoising steps per row (a row leaves the
batch once done under threshold decoding) and the fraction of responses that follow the walk rule.
The autoregressive rows time the AR baseline's network (``agents.autoregressive.model.ARModel``: Llama + the
same patch encoder), sized to the diffusion model's parameter count and trained as long with
next-token cross-entropy, decoding with ``generate`` and a KV cache (and without, for reference).
``--cache DIR`` saves the trained model so repeated runs (and ``bench likelihood``) skip training.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import torch

from agents.cli_args import ArgumentParser, at_least, empty_means_none, in_range, nonempty
from agents.diffusion.likelihood import estimate_log_likelihood
from agents.diffusion.sampler import sample

FIRST_LETTER = 8  # ids below are special tokens of DiffusionConfig (pad, eos, mask, image, ...)


@dataclass
class WalkTask:
    """Synthetic prompts/responses whose response tokens depend strongly on their neighbours."""

    prompt_len: int = 8
    gen_length: int = 32
    letters: int = 16
    jump_prob: float = 0.1

    @property
    def entropy(self) -> float:
        """Entropy of one move in nats (the best achievable NLL per response token)."""
        p = self.jump_prob
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (n, P) and responses (n, G) as token ids."""
        prompts = torch.randint(0, self.letters, (n, self.prompt_len), generator=generator)
        moves = 1 + (torch.rand(n, self.gen_length, generator=generator) < self.jump_prob).long()
        response = (prompts[:, -1:] + moves.cumsum(1)) % self.letters
        return prompts + FIRST_LETTER, response + FIRST_LETTER

    def follows_rule(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Bool (n,): every move of the response is +1 or +2 letters."""
        walk = torch.cat([prompts[:, -1:], responses], dim=1) - FIRST_LETTER
        moves = (walk[:, 1:] - walk[:, :-1]) % self.letters
        in_alphabet = ((responses >= FIRST_LETTER) & (responses < FIRST_LETTER + self.letters)).all(1)
        return in_alphabet & ((moves == 1) | (moves == 2)).all(1)


def tiny_model(task: WalkTask, seed: int = 0, hidden: int = 128, layers: int = 4):
    """The project's DiffusionModel at a tiny size for this task."""
    from agents.diffusion.model import DiffusionConfig, DiffusionModel

    torch.manual_seed(seed)
    config = DiffusionConfig(vocab_size=FIRST_LETTER + task.letters, hidden_size=hidden, num_layers=layers,
                             num_heads=4, max_position_embeddings=task.prompt_len + task.gen_length)
    return DiffusionModel(config)


class _ModelFn:
    """``model_fn(ids, attention_mask) -> logits`` for a DiffusionModel, with the sampler's KV-cache hooks."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None):
        return self.model.encode_with_cache(ids, attention_mask=mask)

    def window(self, ids, mask, start: int, end: int, cache: torch.Tensor) -> torch.Tensor:
        return self.model.forward_window(ids, mask, start, end, cache)


def model_fn_of(model) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``model_fn(ids, attention_mask) -> logits`` for a DiffusionModel (also a CachingModelFn)."""
    return _ModelFn(model)


def tiny_ar_model(task: WalkTask, seed: int = 0, hidden: int = 128, layers: int = 4):
    """The AR baseline's network with about :func:`tiny_model`'s parameter count (MLP width adjusted)."""
    from agents.autoregressive.model import ARConfig, ARModel

    target = sum(p.numel() for p in tiny_model(task, seed, hidden, layers).parameters())
    values = dict(vocab_size=FIRST_LETTER + task.letters, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=task.prompt_len + task.gen_length,
                  pad_token_id=0, bos_token_id=None, eos_token_id=None)
    base = sum(p.numel() for p in ARModel(ARConfig(intermediate_size=1, **values)).parameters()) - 3 * hidden * layers
    torch.manual_seed(seed)
    return ARModel(ARConfig(intermediate_size=max(8, round((target - base) / (3 * hidden * layers))), **values))


def ar_method(model, task: WalkTask, temperature: float, use_cache: bool = True) -> Method:
    """A table row: the AR model's ``generate`` (greedy, or Gumbel-max sampling with a seeded generator)."""
    from transformers import GenerationConfig, LogitsProcessorList

    from agents.autoregressive.model import AllowedTokens, GumbelSampling

    letters = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    letters[FIRST_LETTER:FIRST_LETTER + task.letters] = True
    config = GenerationConfig(max_new_tokens=task.gen_length, min_new_tokens=task.gen_length, do_sample=False,
                              use_cache=use_cache, eos_token_id=None, pad_token_id=0, bos_token_id=None)

    def run(prompts: torch.Tensor, seed: int) -> Decoded:
        processors = LogitsProcessorList([AllowedTokens(letters)])
        if temperature > 0:
            processors.append(GumbelSampling(temperature, torch.Generator(prompts.device).manual_seed(seed)))
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), generation_config=config,
                                 logits_processor=processors)
        return Decoded(out[:, prompts.shape[1]:], task.gen_length, float(task.gen_length))

    return run


def train_walk(model, task: WalkTask, steps: int, batch: int = 64, lr: float = 3e-3, seed: int = 0,
               causal: bool = False) -> list[float]:
    """Masked-diffusion training (complementary-mask ELBO per token; ``causal``: next-token CE); loss per step."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (1 - s / (steps + 1)))
    losses = []
    model.train()
    for step in range(steps):
        prompts, responses = task.batch(batch, gen)
        seqs = torch.cat([prompts, responses], dim=1).to(device)
        response_mask = torch.zeros_like(seqs, dtype=torch.bool)
        response_mask[:, task.prompt_len:] = True
        if causal:
            loss = model(input_ids=seqs, labels=seqs.masked_fill(~response_mask, -100)).loss
        else:
            est = estimate_log_likelihood(model_fn_of(model), seqs, response_mask, estimator="complementary",
                                          mask_seed=seed * 1_000_003 + step, mask_id=model.config.mask_token_id,
                                          normalize=True)
            loss = -est.loglik.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@dataclass
class Decoded:
    """What one method produced for a batch of prompts."""

    responses: torch.Tensor  # (B, G) token ids
    model_calls: int  # batched model calls
    steps_per_row: float  # mean denoising steps (or decoded tokens for AR) per row


Method = Callable[[torch.Tensor, int], Decoded]


def diffusion_method(model, task: WalkTask, **decoding) -> Method:
    """A table row: sample with the given LLaDA decoding settings."""

    def run(prompts: torch.Tensor, seed: int) -> Decoded:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = sample(model_fn_of(model), prompts, None, gen_length=task.gen_length,
                         mask_id=model.config.mask_token_id, generator=gen,
                         suppress_ids=list(range(FIRST_LETTER)), **decoding)
        steps = out.unmask_step.max(dim=1).values.float().mean()
        return Decoded(out.sequences[:, prompts.shape[1]:], out.nfe, float(steps))

    return run


def prepared_model(task: WalkTask, train_steps: int, seed: int, cache: str | None, device: str = "cpu",
                   causal: bool = False):
    """The tiny model (``causal``: the AR one) trained for ``train_steps`` (loaded from ``cache`` when it holds that run)."""
    model = tiny_ar_model(task, seed) if causal else tiny_model(task, seed)
    name = f"{'ar-' if causal else ''}walk-g{task.gen_length}-l{task.letters}-s{train_steps}-seed{seed}.pt"
    path = Path(cache) / name if cache else None
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        print(f"loaded trained model from {path}")
    elif train_steps:
        started = time.perf_counter()
        losses = train_walk(model.to(device), task, train_steps, seed=seed, causal=causal)
        print(f"trained {train_steps} steps in {time.perf_counter() - started:.0f}s: loss/token "
              f"{losses[0]:.3f} -> {sum(losses[-20:]) / len(losses[-20:]):.3f} "
              f"({'next-token CE' if causal else 'complementary ELBO'}; "
              f"the walk's entropy is {task.entropy:.3f} nats/token)")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
    return model.to(device).eval()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the rollout and likelihood benches (task, training, cache, threads)."""
    parser.add_argument("--gen-length", type=at_least(2), default=32)
    parser.add_argument("--train-steps", type=at_least(0), default=600, help="0 = random init")
    parser.add_argument("--cache", default="runs/bench_cache", type=empty_means_none,
                        help="directory to save/load the trained tiny model ('' = none)")
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch CPU threads (1 avoids oversubscription)")


def time_method(run: Method, prompts: torch.Tensor, task: WalkTask, repeats: int, seed: int) -> dict[str, float]:
    """Tokens/s, model calls, steps per row and rule-following rate of one method over ``repeats`` batches."""
    cuda = prompts.is_cuda
    run(prompts, seed)  # warm-up
    totals = dict(tokens=0.0, calls=0.0, steps=0.0, valid=0.0, seconds=0.0)
    for rep in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = run(prompts, seed + rep)
        if cuda:
            torch.cuda.synchronize()
        totals["seconds"] += time.perf_counter() - t0
        totals["tokens"] += out.responses.numel()
        totals["calls"] += out.model_calls / repeats
        totals["steps"] += out.steps_per_row / repeats
        totals["valid"] += float(task.follows_rule(prompts.cpu(), out.responses.cpu()).float().mean()) / repeats
    return {**totals, "tokens_per_s": totals["tokens"] / totals["seconds"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench rollout`` command line; bad values exit 2 with one line naming the flag."""
    parser = ArgumentParser(prog="lavida bench rollout", description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batch", type=at_least(1), default=32, help="rollouts per sampler call")
    parser.add_argument("--block-length", type=at_least(1), default=16)
    parser.add_argument("--threshold", type=in_range(0.0, 1.0, low_open=True), nargs="+", default=[0.85, 0.7, 0.5],
                        help="threshold values to time")  # fmt: skip
    parser.add_argument("--temperature", type=at_least(0, float), default=0.0)
    parser.add_argument("--repeats", type=at_least(1), default=3, help="timed batches per method")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=nonempty)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train a tiny model briefly, then time each decoding method on the same prompts."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    task = WalkTask(gen_length=args.gen_length)
    model = prepared_model(task, args.train_steps, args.seed, args.cache, args.device)
    common = dict(block_length=args.block_length, temperature=args.temperature)
    methods: dict[str, Method] = {
        "diffusion, 1 token/step": diffusion_method(model, task, steps=args.gen_length, **common),
        "diffusion, 2 tokens/step": diffusion_method(model, task, steps=args.gen_length // 2, **common),
        "diffusion, prefix cache": diffusion_method(model, task, steps=args.gen_length, cache="prefix", **common),
        "diffusion, dual cache": diffusion_method(model, task, steps=args.gen_length, cache="dual", **common),
    }
    for value in args.threshold:
        methods[f"diffusion, threshold {value}"] = diffusion_method(
            model, task, steps=args.gen_length, threshold=value, **common)
        methods[f"diffusion, dual + thr {value}"] = diffusion_method(
            model, task, steps=args.gen_length, threshold=value, cache="dual", **common)
    ar_model = prepared_model(task, args.train_steps, args.seed, args.cache, args.device, causal=True)
    methods["autoregressive, KV cache"] = ar_method(ar_model, task, args.temperature)
    methods["autoregressive, no cache"] = ar_method(ar_model, task, args.temperature, use_cache=False)
    print(f"device={args.device} batch={args.batch} gen_length={args.gen_length} block_length={args.block_length} "
          f"temperature={args.temperature} params={sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"(autoregressive {sum(p.numel() for p in ar_model.parameters()) / 1e6:.2f}M)")
    print(f"{'method':30s} {'tokens/s':>9s} {'speedup':>8s} {'calls/batch':>12s} {'steps/row':>10s} {'valid':>6s}")
    prompts = task.batch(args.batch, torch.Generator().manual_seed(args.seed + 1))[0].to(args.device)
    from evaluation.throughput import record

    baseline, first = None, next(iter(methods))
    for name, run in methods.items():
        stats = time_method(run, prompts, task, args.repeats, args.seed)
        baseline = baseline or stats["tokens_per_s"]
        print(f"{name:30s} {stats['tokens_per_s']:9.0f} {stats['tokens_per_s'] / baseline:7.2f}x "
              f"{stats['calls']:12.1f} {stats['steps']:10.1f} {stats['valid']:6.2f}")
        if name != first:
            record("rollout", f"{name.replace('diffusion, ', 'diffusion ')} tokens/s (valid {stats['valid']:.2f})",
                   stats["tokens_per_s"], "/s", stats["tokens_per_s"] / baseline, first)
    print("valid = fraction of responses whose every move is +1 or +2 letters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
