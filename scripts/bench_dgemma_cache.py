"""DiffusionGemma rollouts: denoising steps per second with the encoder KV cache reused across steps vs re-encoding.

``cache="prefix"`` encodes the prompt and image once per rollout call and every decoder pass attends to
that cache, as transformers' own DiffusionGemma generation does; ``cache="none"`` runs the encoder
again at every denoising step. Both draw the same tokens (tests/test_hf_dgemma.py checks equality;
this script checks it again on the larger model). The model is a random DiffusionGemma built from its
config classes (tests/tiny_dgemma.py; ``--hidden`` / ``--layers`` make it larger than the tests' one),
so only the timing means anything. Settings are timed in interleaved rounds; the best round is kept::

    OMP_NUM_THREADS=1 python scripts/bench_dgemma_cache.py --hidden 128 --layers 4 --rounds 3

Timings on a loaded machine are not figures: say the load (``uptime``) with any number reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import lavida_envs  # noqa: E402,F401  (registers the ids)
from agents.cli_args import ArgumentParser, at_least  # noqa: E402
from agents.diffusion.policy import DecodingConfig  # noqa: E402
from agents.hf.dgemma import DGemmaPolicy  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's command line; bad values exit 2 with one line naming the flag."""
    p = ArgumentParser(prog="bench_dgemma_cache.py", description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=at_least(32), default=128, help="text hidden size (tests' model: 64)")
    p.add_argument("--layers", type=at_least(1), default=4, help="text layers (tests' model: 2)")
    p.add_argument("--canvas", type=at_least(4), default=16, help="canvas (block) length")
    p.add_argument("--gen-length", type=at_least(4), default=32, help="response positions per row")
    p.add_argument("--steps", type=at_least(1), default=16, help="denoising steps per response")
    p.add_argument("--batch", type=at_least(1), default=4, help="observations per rollout call")
    p.add_argument("--rounds", type=at_least(1), default=3, help="interleaved timed rounds (best kept)")
    p.add_argument("--threads", type=at_least(1), default=1, help="torch CPU threads")
    return p.parse_args(argv)


def timed(policy: DGemmaPolicy, observations: list[dict], cache: str, seed: int) -> tuple[float, int, torch.Tensor]:
    """(seconds, decoder passes, sequences) of one greedy rollout call with ``cache``."""
    policy.decoding = replace(policy.decoding, cache=cache)
    start = time.perf_counter()
    with torch.no_grad():
        out = policy.rollout(observations, 1, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start, int(out.extras["nfe"]), out.sequences


def main(argv: list[str] | None = None) -> int:
    """Build the model, time both settings, print steps/s and the ratio."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from tiny_dgemma import save_tiny_dgemma

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_dgemma(Path(tmp) / "dgemma", canvas_length=args.canvas, hidden_size=args.hidden, layers=args.layers)
        decoding = DecodingConfig(gen_length=args.gen_length, steps=args.steps, temperature=0.0)
        policy = DGemmaPolicy.from_hf(folder, decoding=decoding)
    policy.model.eval()
    params = sum(p.numel() for p in policy.model.parameters())
    env = gym.make("LaViDa/VisualMath-v0", split="test", difficulty=1, image_size=64)
    observations = [env.reset(options={"index": i})[0] for i in range(args.batch)]
    timed(policy, observations, "prefix", 0)  # warm-up of both paths
    best: dict[str, float] = {}
    passes, outputs = {}, {}
    for r in range(args.rounds):
        for cache in ("prefix", "none"):
            seconds, nfe, seqs = timed(policy, observations, cache, r)
            best[cache] = min(best.get(cache, float("inf")), seconds)
            passes[cache], outputs[(cache, r)] = nfe, seqs
    same = all(torch.equal(outputs[("prefix", r)], outputs[("none", r)]) for r in range(args.rounds))
    print(f"DiffusionGemma random init: {params:,} parameters (text hidden {args.hidden}, {args.layers} layers), "
          f"canvas {args.canvas}, gen_length {args.gen_length}, steps {args.steps}, batch {args.batch}, threads {args.threads}")
    for cache, label in (("prefix", "encoder cache reused"), ("none", "re-encoding every step")):
        print(f"{label:24s} {passes[cache] / best[cache]:8.2f} steps/s  ({best[cache]:.3f} s per call, {passes[cache]} decoder passes)")
    print(f"ratio cached / re-encoding: {best['none'] / best['prefix']:.2f}x; identical tokens: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
