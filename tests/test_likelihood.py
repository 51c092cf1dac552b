"""agents.diffusion.likelihood: mask coverage, seeding, gradients and exactness on a context-free model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tiny_denoiser import MASK_ID, ContextFree, TinyDenoiser

from agents.diffusion.likelihood import estimate_log_likelihood
from agents.train_batch import Likelihood, NLLMeter

torch.set_num_threads(1)
ESTIMATORS = ["mean_field", "random_mask", "complementary"]


def _batch(batch: int = 3, length: int = 14, prompt: int = 5, seed: int = 0):
    """Sequences with prompt [0, prompt), a response of varying length, right padding (token 0)."""
    seqs = torch.randint(1, 20, (batch, length), generator=torch.Generator().manual_seed(seed))
    response = torch.zeros(batch, length, dtype=torch.bool)
    attention = torch.ones(batch, length, dtype=torch.bool)
    for i in range(batch):
        end = length - 2 * i
        response[i, prompt:end] = True
        attention[i, end:] = False
        seqs[i, end:] = 0
    return seqs, response, attention


class Recorder:
    """model_fn that records every input it is given."""

    def __init__(self, model):
        self.model, self.inputs = model, []

    def __call__(self, ids, attention_mask):
        self.inputs.append(ids.clone())
        return self.model(ids, attention_mask)


def _estimate(model, estimator, seed=0, batch=None, **kw):
    seqs, response, attention = batch or _batch()
    return estimate_log_likelihood(model, seqs, response, estimator=estimator, mask_seed=seed, mask_id=MASK_ID,
                                   attention_mask=attention, **kw)


@pytest.mark.parametrize("pairs", [1, 3])
def test_complementary_pair_scores_every_response_token_once_and_never_masks_the_prompt(pairs):
    seqs, response, attention = _batch()
    recorder = Recorder(TinyDenoiser())
    est = _estimate(recorder, "complementary", seed=4, num_samples=pairs)
    assert est.num_forward == 2 * pairs == len(recorder.inputs)
    assert torch.equal(est.scored_count, response.long() * pairs)
    for first, second in zip(recorder.inputs[0::2], recorder.inputs[1::2]):
        m1, m2 = first == MASK_ID, second == MASK_ID
        assert torch.equal(m1 ^ m2, response) and not (m1 & m2).any()
        assert torch.equal(first[~response], seqs[~response]) and torch.equal(second[~response], seqs[~response])


def test_complementary_with_fixed_t_masks_that_fraction_and_still_covers_each_token_once():
    seqs, response, attention = _batch(batch=2, length=200, prompt=8)
    recorder = Recorder(ContextFree(200))
    est = _estimate(recorder, "complementary", seed=1, batch=(seqs, response, attention), num_samples=2,
                    complementary_t=0.25)
    assert torch.equal(est.scored_count, 2 * response.long())
    first_views = torch.stack(recorder.inputs[0::2]) == MASK_ID
    assert 0.18 < float(first_views[:, response].float().mean()) < 0.32


def test_random_mask_scores_only_masked_response_tokens():
    recorder = Recorder(TinyDenoiser())
    est = _estimate(recorder, "random_mask", seed=2, num_samples=4)
    seqs, response, _ = _batch()
    assert est.num_forward == 4
    masked_total = sum((ids == MASK_ID).long() for ids in recorder.inputs)
    assert torch.equal(est.scored_count, masked_total)
    assert (est.scored_count[~response] == 0).all() and (est.token_logp[est.scored_count == 0] == 0).all()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_loglik_is_the_sum_of_token_contributions_and_normalize_divides_by_length(estimator):
    model = TinyDenoiser()
    est = _estimate(model, estimator, seed=1, num_samples=2)
    assert torch.allclose(est.loglik, est.token_logp.sum(-1))
    normalized = _estimate(model, estimator, seed=1, num_samples=2, normalize=True)
    assert torch.allclose(normalized.loglik, est.loglik / _batch()[1].sum(-1))


@pytest.mark.parametrize("estimator, kw", [("random_mask", {}), ("complementary", {}),
                                           ("mean_field", {"prompt_mask_prob": 0.5})])
def test_same_mask_seed_same_estimate_different_seed_differs(estimator, kw):
    model = TinyDenoiser()
    a, b, c = (_estimate(model, estimator, seed=s, **kw).loglik for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("estimator", ["random_mask", "complementary"])
def test_a_rows_masks_do_not_depend_on_the_rest_of_the_batch(estimator):
    model = TinyDenoiser()
    seqs, response, attention = _batch()
    full = _estimate(model, estimator, seed=3, batch=(seqs, response, attention))
    alone = _estimate(model, estimator, seed=3, batch=(seqs[:1], response[:1], attention[:1]))
    assert torch.allclose(full.loglik[:1], alone.loglik, atol=1e-5)
    order = torch.tensor([2, 0, 1])  # explicit per-row seeds follow the rows when they are shuffled
    seeds = torch.tensor([11, 22, 33])
    ref = estimate_log_likelihood(model, seqs, response, estimator=estimator, mask_seed=seeds, mask_id=MASK_ID,
                                  attention_mask=attention)
    shuffled = estimate_log_likelihood(model, seqs[order], response[order], estimator=estimator,
                                       mask_seed=seeds[order], mask_id=MASK_ID, attention_mask=attention[order])
    assert torch.allclose(ref.loglik[order], shuffled.loglik, atol=1e-5)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradients_flow_to_the_model(estimator):
    model = TinyDenoiser()
    est = _estimate(model, estimator, seed=5)
    est.loglik.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_mean_field_and_complementary_are_exact_on_a_context_free_model():
    seqs, response, attention = _batch()
    model = ContextFree(seqs.shape[1])
    exact = model.exact_loglik(seqs, response)
    for seed in range(5):
        for estimator in ("mean_field", "complementary"):
            est = _estimate(model, estimator, seed=seed)
            assert torch.allclose(est.loglik, exact, atol=1e-4), (estimator, seed)
    prompt_masked = _estimate(model, "mean_field", seed=0, prompt_mask_prob=0.5)
    assert torch.allclose(prompt_masked.loglik, exact, atol=1e-4)


def test_random_mask_is_unbiased_on_a_context_free_model():
    seqs, response, attention = _batch()
    model = ContextFree(seqs.shape[1])
    exact = model.exact_loglik(seqs, response)
    with torch.no_grad():
        draws = torch.stack([_estimate(model, "random_mask", seed=s).loglik for s in range(1500)])  # (S, B)
    mean, stderr = draws.mean(0), draws.std(0) / draws.shape[0] ** 0.5
    assert (draws.std(0) > 1.0).all()  # single draws are noisy ...
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean, exact, stderr)  # ... but centred on the truth


def test_mean_field_prompt_masking_respects_probability_and_exclusions():
    seqs, response, attention = _batch(batch=4, length=40, prompt=30)
    exclude = torch.zeros_like(response)
    exclude[:, :4] = True  # e.g. image placeholders
    recorder = Recorder(ContextFree(40))
    est = estimate_log_likelihood(recorder, seqs, response, estimator="mean_field", mask_seed=0, mask_id=MASK_ID,
                                  attention_mask=attention, prompt_mask_prob=0.3, prompt_mask_exclude=exclude,
                                  num_samples=5)
    masked = torch.stack(recorder.inputs) == MASK_ID  # (5, B, L)
    assert masked[:, response].all() and not masked[:, exclude].any() and not masked[:, ~attention].any()
    candidates = ~response & ~exclude & attention
    rate = masked[:, candidates].float().mean()
    assert 0.2 < rate < 0.4
    assert torch.equal(est.scored_count, 5 * response.long())


def test_trainer_nll_meter_splits_text_and_image_positions():
    seqs, response, attention = _batch()
    est = _estimate(ContextFree(seqs.shape[1]), "mean_field")
    image = torch.zeros_like(response)
    image[:, 8:] = True
    meter = NLLMeter()
    for _ in range(2):  # two calls of one step accumulate
        meter.add(SimpleNamespace(extras={"code_mask": image}), Likelihood(est.loglik, est.token_logp, response))
    split = meter.metrics()
    text_sel, image_sel = response & ~image, response & image
    assert split["nll/text"] == pytest.approx(float(-est.token_logp[text_sel].sum() / text_sel.sum()), rel=1e-6)
    assert split["nll/image"] == pytest.approx(float(-est.token_logp[image_sel].sum() / image_sel.sum()), rel=1e-6)
    text_only = NLLMeter()
    text_only.add(SimpleNamespace(extras={}), Likelihood(est.loglik, None, response))
    assert text_only.metrics()["nll/text"] == pytest.approx(float(-est.loglik.sum() / response.sum()), rel=1e-6)
    assert math.isnan(text_only.metrics()["nll/image"])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(estimator="elbo"), "estimator must be one of"),
        (dict(estimator="random_mask", prompt_mask_prob=0.2), "mean_field option"),
        (dict(estimator="mean_field", num_samples=0), "num_samples"),
        (dict(estimator="random_mask", complementary_t=0.5), "complementary_t"),
        (dict(estimator="complementary", complementary_t=1.0), "complementary_t"),
        (dict(estimator="mean_field", mask_seed=torch.tensor([1, 2])), "one seed per row"),
    ],
)
def test_bad_arguments_raise_clear_errors(kw, message):
    seqs, response, attention = _batch()
    args = dict(mask_seed=0, mask_id=MASK_ID, attention_mask=attention)
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        estimate_log_likelihood(TinyDenoiser(), seqs, response, **args)


def test_rejects_a_response_that_still_holds_mask_tokens_or_padding():
    seqs, response, attention = _batch()
    bad = seqs.clone()
    bad[0, 6] = MASK_ID
    with pytest.raises(ValueError, match="mask token"):
        estimate_log_likelihood(TinyDenoiser(), bad, response, estimator="mean_field", mask_seed=0, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="attention_mask excludes"):
        estimate_log_likelihood(TinyDenoiser(), seqs, response | ~attention, estimator="mean_field", mask_seed=0,
                                mask_id=MASK_ID, attention_mask=attention)
