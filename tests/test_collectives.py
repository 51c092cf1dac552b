"""agents.collectives and agents.optim_step without processes: padded shares, synced decoding steps, forward
counters, and one DeepSpeed engine step per trainer step (a stand-in engine; deepspeed is not a dependency)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tiny_denoiser import MASK_ID, CallCounter, TinyDenoiser

import agents.diffusion.sampler as sampler
from agents.collectives import ForwardCounter, pad_shares
from agents.optim_step import finish_step, micro_backward

torch.set_num_threads(1)


@pytest.mark.parametrize("n, world", [(3, 2), (7, 3), (4, 2), (1, 4)])
def test_padded_shares_have_equal_length_and_cover_each_item_once(n, world):
    shares = [pad_shares(list(range(n)), r, world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // world)
    real = sorted(i for s in shares for i, ok in s if ok)
    assert real == list(range(n))


class OtherRank:
    """A stand-in StepSync: the other rank makes ``calls[i]`` model calls at its step i (then is done)."""

    def __init__(self, calls: list[int]) -> None:
        self.calls, self.i = calls, 0

    def pad(self, calls: int, working: bool) -> tuple[int, bool]:
        theirs = self.calls[self.i] if self.i < len(self.calls) else 0
        self.i += 1
        return max(calls, theirs) - calls, working or self.i < len(self.calls)


def _decode(model, monkeypatch, other: OtherRank | None, **kw):
    monkeypatch.setattr(sampler, "active_sync", lambda: other)
    prompts = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    settings = dict(gen_length=8, steps=8, block_length=4, mask_id=MASK_ID, threshold=0.3)
    settings.update(kw)
    with torch.no_grad():
        return sampler.sample(model, prompts, None, generator=torch.Generator().manual_seed(0), **settings)


def test_a_rank_that_finishes_decoding_first_keeps_forwarding_until_the_other_is_done(monkeypatch):
    alone = CallCounter(TinyDenoiser(seed=1, logit_scale=8.0).eval())
    out = _decode(alone, monkeypatch, None)
    mine = alone.calls
    synced = CallCounter(TinyDenoiser(seed=1, logit_scale=8.0).eval())
    other = OtherRank([1] * (mine + 5))  # the other rank needs 5 more steps
    padded = _decode(synced, monkeypatch, other)
    assert synced.calls == mine + 5 and other.i == mine + 5  # one sync per step, dummy forwards after mine ended
    assert torch.equal(padded.sequences, out.sequences) and padded.nfe == out.nfe  # the dummies change nothing


def test_a_rank_with_fewer_calls_in_a_step_makes_up_the_difference(monkeypatch):
    model = CallCounter(TinyDenoiser(seed=0).eval())
    out = _decode(model, monkeypatch, OtherRank([3] * 8), threshold=None)  # fixed schedule: 8 steps, 1 call each
    assert out.nfe == 8 and model.calls == 24


def test_forward_counter_counts_per_phase():
    model = torch.nn.Linear(2, 2)
    counter = ForwardCounter().attach(model)
    model(torch.zeros(1, 2))
    with counter.phase("rollout"):
        model(torch.zeros(1, 2))
        with counter.phase("eval"):
            model(torch.zeros(1, 2))
        model(torch.zeros(1, 2))
    assert counter.as_dict() == {"eval": 1, "other": 1, "rollout": 2}


class FakeEngine(torch.nn.Module):
    """A DeepSpeed engine stand-in: records boundaries, backward and step calls (the engine's own API names)."""

    def __init__(self) -> None:
        super().__init__()
        self.module = torch.nn.Linear(2, 1)
        self.boundaries: list[bool] = []
        self.steps = self.zeroed = 0
        self.lr_scheduler = SimpleNamespace(steps=0)
        self.lr_scheduler.step = lambda: setattr(self.lr_scheduler, "steps", self.lr_scheduler.steps + 1)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=0.1)

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.boundaries.append(bool(is_boundary))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.steps += 1
        self.optimizer.step()
        self.zero_grad()

    def zero_grad(self) -> None:
        self.zeroed += 1
        self.module.zero_grad(set_to_none=True)

    def get_global_grad_norm(self) -> float:
        return 1.0


def _trainer_step(engine: FakeEngine, micro: int, poison: bool = False) -> dict:
    accelerator = SimpleNamespace(device=torch.device("cpu"), backward=None)  # never used with an engine
    for k in range(micro):
        loss = engine.module(torch.ones(1, 2)).sum() * (float("nan") if poison and k == 0 else 1.0)
        micro_backward(accelerator, engine, loss, boundary=k == micro - 1)
    return finish_step(accelerator, engine, engine.optimizer, 1.0)


def test_deepspeed_takes_one_engine_step_per_trainer_step_at_the_boundary():
    engine = FakeEngine()
    for _ in range(3):
        out = _trainer_step(engine, 4)
        assert out["skipped"] == 0.0 and out["grad_norm"] == 1.0
    assert engine.steps == 3 and engine.boundaries == [False, False, False, True] * 3


def test_a_non_finite_gradient_skips_the_engine_step_and_clears_every_gradient():
    engine = FakeEngine()
    before = [p.detach().clone() for p in engine.module.parameters()]
    out = _trainer_step(engine, 2, poison=True)
    assert out["skipped"] == 1.0 and "non-finite" in out["warning"]
    assert engine.steps == 0 and engine.lr_scheduler.steps == 1  # no update; the schedule still follows the step
    assert all(p.grad is None for p in engine.module.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))


class RecordingPolicy:
    """Answers every observation with the same text and records how many observations each ``act`` call got."""

    def __init__(self) -> None:
        from agents.diffusion.policy import DecodingConfig

        self.decoding, self.calls = DecodingConfig(), []

    def act(self, observations, num_samples):
        self.calls.append(len(observations))
        return [["<answer>0</answer>"] * num_samples for _ in observations]


def test_trainer_eval_shares_are_padded_and_the_padding_dropped():
    from agents.config import TrainConfig
    from agents.train_batch import evaluate, make_envs

    config = TrainConfig(tasks={"visual_math": 1.0}, eval_episodes=3, image_size=32).validate()
    envs = make_envs(config, "test")
    policies = [RecordingPolicy(), RecordingPolicy()]
    results = [evaluate(policies[r], envs, config, rank=r, world=2, batch_size=1) for r in (0, 1)]
    assert [len(r["visual_math"]) for r in results] == [2, 1]  # 3 problems, each scored once
    assert policies[0].calls == policies[1].calls == [1, 1]  # rank 1 decodes a padding problem too


class SureDenoiser:
    """A DiffusionGemma stand-in whose every pass is certain (zero entropy): a block commits at its first step."""

    config = SimpleNamespace(canvas_length=4, vocab_size=10)

    def __init__(self) -> None:
        self.decodes = 0

    def encode(self, ids, att, pixel_values):
        return None

    def decode(self, canvas, context, att, sc_logits=None):
        self.decodes += 1
        logits = torch.full((*canvas.shape, 10), -1e4)
        logits[..., 5] = 1e4
        return logits

    def extend(self, kv, canvas, att):
        return kv


class DecodesAtEveryStep:
    """A stand-in StepSync asked before each pass: the other rank always has positions open."""

    def pad(self, calls: int, working: bool) -> tuple[int, bool]:
        return 0, True


def _dgemma(model, monkeypatch, other):
    import agents.hf.dgemma_sample as dgemma

    monkeypatch.setattr(dgemma, "active_sync", lambda: other)
    state = dgemma.CanvasState(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.bool),
                               torch.zeros(1, 8, dtype=torch.long))  # fmt: skip
    return dgemma.sample_blocks(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool), None,
                                state, steps=8, temperature=0.0, entropy_bound=1.0, cache="none", suppress=[0])  # fmt: skip


def test_dgemma_blocks_keep_every_rank_decoding_until_all_are_done(monkeypatch):
    alone = SureDenoiser()
    final, nfe = _dgemma(alone, monkeypatch, None)
    assert alone.decodes == nfe == 2  # 2 blocks of 4 steps, each done after its first pass
    synced = SureDenoiser()
    padded, padded_nfe = _dgemma(synced, monkeypatch, DecodesAtEveryStep())  # the other rank uses all 8 steps
    assert synced.decodes == 8 and padded_nfe == 2 and torch.equal(padded.tokens, final.tokens)
