"""agents.diffusion.sampler: forcing, blocks, schedule, threshold decoding, seeding, state rebuild/resume."""

from __future__ import annotations

import pytest
import torch
from tiny_denoiser import MASK_ID, CallCounter, TinyDenoiser

from agents.diffusion.masking import get_num_transfer_tokens
from agents.diffusion.sampler import SamplerState, rebuild_state, sample

torch.set_num_threads(1)
MODEL = TinyDenoiser(seed=0).eval()
SHARP = TinyDenoiser(seed=1, logit_scale=8.0).eval()


def _prompts(batch: int = 3, length: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 20, (batch, length), generator=torch.Generator().manual_seed(seed))


def _run(model=MODEL, prompts=None, mask=None, *, seed=0, states=None, **kw):
    prompts = _prompts() if prompts is None else prompts
    settings = dict(gen_length=12, steps=12, block_length=4, mask_id=MASK_ID)
    settings.update(kw)
    gen = torch.Generator().manual_seed(seed)
    hook = states.append if states is not None else None
    with torch.no_grad():
        return sample(model, prompts, mask, generator=gen, on_step=hook, **settings)


def _forced(batch=3, gen_length=12):
    forced_mask = torch.zeros(batch, gen_length, dtype=torch.bool)
    forced_mask[:, -3:] = True
    forced_mask[0, 1] = True
    forced_ids = torch.full((batch, gen_length), 7)
    forced_ids[:, -3:] = torch.tensor([4, 5, 6])
    return forced_ids, forced_mask


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_forced_positions_hold_their_tokens_at_every_step(threshold):
    forced_ids, forced_mask = _forced()
    states: list[SamplerState] = []
    out = _run(SHARP, temperature=1.0, threshold=threshold, forced_ids=forced_ids, forced_mask=forced_mask, states=states)
    for state in [*states, out]:
        response = state.sequences[:, 5:]
        assert torch.equal(response[forced_mask], forced_ids[forced_mask])
    assert (out.unmask_step[forced_mask] == 0).all()
    assert (out.unmask_step[~forced_mask] >= 1).all()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_no_mask_token_remains_and_prompt_is_untouched(remasking, threshold):
    prompts = _prompts()
    out = _run(prompts=prompts, temperature=0.7, remasking=remasking, threshold=threshold)
    assert out.sequences.shape == (3, 17)
    assert not (out.sequences == MASK_ID).any()
    assert torch.equal(out.sequences[:, :5], prompts)
    assert (out.unmask_step >= 1).all()


def test_suppressed_ids_and_mask_token_are_never_predicted():
    model = TinyDenoiser(seed=2)
    with torch.no_grad():
        model.head.bias[MASK_ID] += 50.0  # the raw model would always pick the mask token ...
        model.head.bias[3] += 40.0  # ... and then token 3
    out = _run(model, temperature=1.0, suppress_ids=[3])
    assert not ((out.sequences[:, 5:] == MASK_ID) | (out.sequences[:, 5:] == 3)).any()


def test_same_seed_same_output_and_different_seeds_differ():
    a = _run(temperature=1.0, seed=11)
    b = _run(temperature=1.0, seed=11)
    c = _run(temperature=1.0, seed=12)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.unmask_step, b.unmask_step)
    assert not torch.equal(a.sequences, c.sequences)
    r1, r2 = _run(remasking="random", seed=1), _run(remasking="random", seed=2)
    assert not torch.equal(r1.unmask_step, r2.unmask_step)  # random remasking: order from the generator


def test_each_step_unmasks_llada_even_schedule_within_its_block():
    out = _run(gen_length=12, steps=9, block_length=4)  # 3 blocks x 3 steps, 4 tokens -> 2, 1, 1
    expected = get_num_transfer_tokens(torch.tensor([4]), 3)[0].tolist()
    assert expected == [2, 1, 1]
    for row in out.unmask_step:
        counts = torch.bincount(row, minlength=10)[1:].tolist()
        assert counts == expected * 3
        for block in range(3):
            steps_here = row[4 * block : 4 * block + 4]
            assert steps_here.min() > 3 * block and steps_here.max() <= 3 * block + 3


@pytest.mark.parametrize("threshold", [None, 0.2])
def test_earlier_blocks_are_fully_unmasked_before_later_ones_start(threshold):
    states: list[SamplerState] = []
    _run(SHARP, temperature=1.0, threshold=threshold, states=states)
    for state in states:
        masked = (state.sequences[:, 5:] == MASK_ID).view(3, 3, 4)  # rows, blocks, positions
        started = (~masked).any(-1)  # a block with any unmasked position
        complete = (~masked).all(-1)
        for block in range(1, 3):
            assert (~started[:, block] | complete[:, :block].all(-1)).all()


def test_threshold_decoding_uses_fewer_model_calls_than_one_token_per_step():
    default = _run(SHARP, gen_length=16, steps=16, block_length=8)
    fast = _run(SHARP, gen_length=16, steps=16, block_length=8, threshold=0.5)
    strict = _run(SHARP, gen_length=16, steps=16, block_length=8, threshold=1.0)
    assert default.nfe == 16 and strict.nfe == 16  # nothing beats 1.0: exactly one token per step
    assert 2 <= fast.nfe < default.nfe
    assert not (fast.sequences == MASK_ID).any()
    # at temperature 0 the strict-threshold run picks the same tokens in the same order as the default
    assert torch.equal(strict.sequences, default.sequences)


def test_nfe_counts_real_model_calls_and_skips_fully_forced_blocks():
    counter = CallCounter(MODEL)
    forced_mask = torch.zeros(3, 12, dtype=torch.bool)
    forced_mask[:, 4:8] = True  # block 1 is given: its 4 steps need no model call
    out = _run(counter, forced_ids=torch.full((3, 12), 9), forced_mask=forced_mask)
    assert out.nfe == counter.calls == 8 and out.steps_taken == 12


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_rebuilt_state_equals_the_samplers_own_state_at_every_step(threshold):
    forced_ids, forced_mask = _forced()
    states: list[SamplerState] = []
    out = _run(SHARP, temperature=1.0, threshold=threshold, forced_ids=forced_ids, forced_mask=forced_mask, states=states)
    assert [s.step for s in states] == list(range(len(states)))
    for own in states:
        rebuilt = rebuild_state(out.sequences, out.unmask_step, own.step, prompt_len=5, mask_id=MASK_ID)
        assert rebuilt.equals(own), f"state differs at step {own.step}"


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_resume_makes_only_the_remaining_calls_and_repeats_with_the_same_generator_state(threshold):
    gen = torch.Generator().manual_seed(5)
    saved = {}

    def hook(state: SamplerState) -> None:
        if state.step == 4:
            saved["rng"] = gen.get_state()

    prompts = _prompts()
    kw = dict(gen_length=12, steps=12, block_length=4, mask_id=MASK_ID, temperature=1.0, threshold=threshold)
    with torch.no_grad():
        full = sample(SHARP, prompts, None, generator=gen, on_step=hook, **kw)
        state = rebuild_state(full.sequences, full.unmask_step, 4, prompt_len=5, mask_id=MASK_ID)
        resumed_gen = torch.Generator()
        resumed_gen.set_state(saved["rng"])
        resumed = sample(SHARP, prompts, None, generator=resumed_gen, state=state, **kw)
    assert resumed.nfe == full.nfe - 4 and resumed.steps_taken == full.steps_taken - 4
    assert torch.equal(resumed.sequences, full.sequences) and torch.equal(resumed.unmask_step, full.unmask_step)


def test_branching_a_repeated_state_keeps_the_shared_prefix():
    base = _run(temperature=1.0, prompts=_prompts(1))
    state = rebuild_state(base.sequences, base.unmask_step, 6, prompt_len=5, mask_id=MASK_ID).repeat(4)
    with torch.no_grad():
        branches = sample(MODEL, _prompts(1).repeat(4, 1), None, gen_length=12, steps=12, block_length=4,
                          mask_id=MASK_ID, temperature=1.0, generator=torch.Generator().manual_seed(3), state=state)
    kept = (base.unmask_step <= 6).expand(4, -1)
    assert torch.equal(branches.sequences[:, 5:][kept], base.sequences[:, 5:].expand(4, -1)[kept])
    assert branches.nfe == 6 and (branches.unmask_step[~kept] > 6).all()
    assert len({tuple(r) for r in branches.sequences.tolist()}) > 1


@pytest.mark.parametrize("threshold", [None, 0.4])
def test_batched_left_padded_rows_equal_per_row_runs(threshold):
    rows = [torch.tensor([3, 1, 4, 1, 5]), torch.tensor([9, 2, 6]), torch.tensor([5, 3])]
    width = max(len(r) for r in rows)
    padded = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        padded[i, width - len(r):], mask[i, width - len(r):] = r, True
    forced_ids, forced_mask = _forced()
    kw = dict(gen_length=12, steps=6, block_length=4, threshold=threshold)
    batched = _run(SHARP, padded, mask, forced_ids=forced_ids, forced_mask=forced_mask, **kw)
    for i, r in enumerate(rows):
        single = _run(SHARP, r.unsqueeze(0), None, forced_ids=forced_ids[i : i + 1], forced_mask=forced_mask[i : i + 1], **kw)
        assert torch.equal(single.sequences[0, len(r):], batched.sequences[i, width:])
        assert torch.equal(single.unmask_step[0], batched.unmask_step[i])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(gen_length=10, block_length=4), "divisible by block_length"),
        (dict(gen_length=12, block_length=4, steps=10), "divisible by the number of blocks"),
        (dict(remasking="greedy"), "remasking must be one of"),
        (dict(temperature=-1.0), "temperature"),
        (dict(threshold=1.5), "threshold"),
        (dict(forced_ids=torch.zeros(3, 12, dtype=torch.long)), "given together"),
        (dict(forced_ids=torch.full((3, 12), MASK_ID), forced_mask=torch.ones(3, 12, dtype=torch.bool)), "mask token"),
        (dict(forced_ids=torch.zeros(3, 8, dtype=torch.long), forced_mask=torch.ones(3, 8, dtype=torch.bool)), "shape"),
        (dict(suppress_ids=[99]), "out of range"),
    ],
)
def test_bad_arguments_raise_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        _run(**kw)


def test_resume_rejects_a_state_from_another_prompt():
    out = _run()
    state = rebuild_state(out.sequences, out.unmask_step, 3, prompt_len=5, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="does not start with prompt_ids"):
        _run(prompts=_prompts(seed=9), state=state)
