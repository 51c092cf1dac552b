"""SFT a tiny random DiffusionGemma on 8 VisualMath reference solutions until greedy decoding recalls all 8 exactly.

The loss is the trainer's SFT loss (``sft_loss`` of ``log_likelihood_terms``: the published recipe's
diffusion CE + encoder AR CE, docs/uniform_diffusion.md); each prompt names its problem ("Problem A.")
as in tests/test_hf_trainable.py. Recall is checked every ``--every`` steps with ``policy.act``
(temperature 0, one token per step at least). This takes about 1,000 steps on the tests' model, past
what one CI test may take, so it is a script::

    OMP_NUM_THREADS=1 python scripts/dgemma_sft_recall.py --lr 3e-3 --every 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import lavida_envs  # noqa: E402,F401  (registers the ids)
from agents.cli_args import ArgumentParser, at_least  # noqa: E402
from agents.diffusion.policy import DecodingConfig  # noqa: E402
from agents.hf.dgemma import DGemmaPolicy  # noqa: E402
from agents.losses import sft_loss  # noqa: E402
from agents.sft import reference_action  # noqa: E402

LETTERS = "ABDEFGHJ"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's command line; bad values exit 2 with one line naming the flag."""
    p = ArgumentParser(prog="dgemma_sft_recall.py", description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=at_least(0, float, above=True), default=3e-3, help="AdamW learning rate")
    p.add_argument("--max-steps", type=at_least(1), default=3000, help="give up after this many steps")
    p.add_argument("--every", type=at_least(1), default=100, help="check recall every this many steps")
    p.add_argument("--image-size", type=at_least(16), default=64, help="VisualMath image size")
    p.add_argument("--estimator", default="complementary", choices=("complementary", "random_mask", "mean_field"))
    return p.parse_args(argv)


def problems(image_size: int) -> tuple[list[dict], list[str]]:
    """The first 8 VisualMath level-1 train problems, each prompt naming its problem, and their references."""
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1, image_size=image_size)
    observations, targets = [], []
    for i, letter in enumerate(LETTERS):
        obs, info = env.reset(options={"index": i})
        observations.append(dict(obs, prompt=f"Problem {letter}."))
        targets.append(reference_action(env, info))
    return observations, targets


def main(argv: list[str] | None = None) -> int:
    """SFT until recall (or ``--max-steps``); print loss, recall and time at each check; exit 0 on 8/8."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    from tiny_dgemma import save_tiny_dgemma

    with tempfile.TemporaryDirectory() as tmp:
        decoding = DecodingConfig(gen_length=32, steps=32, block_length=16, temperature=0.0)
        policy = DGemmaPolicy.from_hf(save_tiny_dgemma(Path(tmp) / "dgemma"), decoding=decoding)
    observations, targets = problems(args.image_size)
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"DiffusionGemma random init, {params:,} parameters; 8 references of {len(policy.text_ids(targets[0]))} tokens")
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=args.lr, weight_decay=0.0)
    batch = policy.sft_rollouts(observations, targets)
    start, recalled = time.perf_counter(), 0
    for step in range(1, args.max_steps + 1):
        policy.model.train()
        estimate = policy.log_likelihood_terms(batch, args.estimator, mask_seed=step)
        loss = sft_loss(estimate.loglik, policy.scored_mask(batch).sum(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            recalled = sum(actions[0] == t for actions, t in zip(policy.act(observations), targets))
            print(f"step {step}: loss {loss.item():.3f}, recalled {recalled}/8, {time.perf_counter() - start:.0f} s", flush=True)
            if recalled == len(targets):
                return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
