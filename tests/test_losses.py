"""agents.losses: advantages, the unified loss, clipping, k3 KL, regularizer arms, TRL token loss (hand-computed)."""

from __future__ import annotations

import math

import pytest
import torch

from agents.losses import (
    distill_advantages,
    frac_zero_std,
    grpo_advantages,
    kl_k3,
    lavida_loss,
    mix_advantages,
    sft_loss,
    unified_loss,
)

# three groups: [1, 0, 0, 1], [0.2, 0.2, 0.2], [0.5, 0.9]
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.5, 0.9])
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
EPS = 1e-4
A0 = 0.5 / (math.sqrt(1 / 3) + EPS)  # group 0: mean 0.5, unbiased std sqrt(1/3)
A2 = 0.2 / (math.sqrt(0.08) + EPS)  # group 2: mean 0.7, unbiased std sqrt(0.08)
GRPO = [A0, -A0, -A0, A0, 0.0, 0.0, 0.0, -A2, A2]
DISTILL = [1.0, 0, 0, 0, 0, 0, 0, 0, 1.0]  # first best of group 0, none in the all-equal group 1


def test_grpo_advantages_match_hand_computed_values():
    assert grpo_advantages(REWARDS, GROUPS).tolist() == pytest.approx(GRPO, rel=1e-6)


def test_grpo_scale_modes_follow_trl():
    centred = [0.5, -0.5, -0.5, 0.5, 0, 0, 0, -0.2, 0.2]
    assert grpo_advantages(REWARDS, GROUPS, scale=False).tolist() == pytest.approx(centred, abs=1e-7)
    assert grpo_advantages(REWARDS, GROUPS, scale="none").tolist() == pytest.approx(centred, abs=1e-7)
    batch_std = float(REWARDS.double().std())
    expected = [c / (batch_std + EPS) for c in centred]
    assert grpo_advantages(REWARDS, GROUPS, scale="batch").tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(REWARDS, GROUPS, scale="per_token")


def test_groups_are_found_by_id_not_by_position_and_singletons_get_zero():
    rewards = torch.tensor([1.0, 3.0, 0.0, 5.0, 7.0])
    ids = torch.tensor([5, 3, 5, 3, 9])  # groups {0, 2}: [1, 0]; {1, 3}: [3, 5]; {4}: [7]
    a = grpo_advantages(rewards, ids)
    s1, s2 = 0.5 / (math.sqrt(0.5) + EPS), 1.0 / (math.sqrt(2.0) + EPS)  # centred +-0.5 and +-1
    assert a.tolist() == pytest.approx([s1, -s2, -s1, s2, 0.0], rel=1e-6)
    assert distill_advantages(rewards, ids).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_distill_picks_the_first_best_and_nothing_in_all_equal_groups():
    assert distill_advantages(REWARDS, GROUPS).tolist() == DISTILL
    assert distill_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long)).tolist() == [0.0] * 4


def test_mixing_matches_hand_computed_values():
    mixed = mix_advantages(0.5, distill_advantages(REWARDS, GROUPS), grpo_advantages(REWARDS, GROUPS))
    assert mixed.tolist() == pytest.approx([0.5 * d + 0.5 * g for d, g in zip(DISTILL, GRPO)], rel=1e-6)
    assert mix_advantages(0.0, torch.ones(2), torch.zeros(2)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="gamma"):
        mix_advantages(1.5, torch.ones(2), torch.zeros(2))


def test_frac_zero_std_counts_groups_whose_rewards_all_agree():
    assert frac_zero_std(REWARDS, GROUPS) == pytest.approx(1 / 3)


LOGLIK = torch.tensor([-2.0, -4.0, -1.0])
ADV = torch.tensor([1.0, -0.5, 0.25])
TOKENS = torch.tensor([2, 4, 1])


@pytest.mark.parametrize(
    "loss_type, kw, expected",
    [
        ("sequence", {}, -(1 / 3) * (-2 + 2 - 0.25)),  # -(1/N) sum A_i ELBO_i
        ("grpo", {}, -(1 / 3) * (-1 + 0.5 - 0.25)),  # ELBO / tokens
        ("bnpo", {}, -(1 / 7) * (-0.25)),  # / 7 tokens
        ("dapo", {}, -(1 / 7) * (-0.25)),
        ("dr_grpo", {"max_length": 4}, -(1 / 12) * (-0.25)),  # / (N * max_length)
        ("sequence", {"normalizer": 5.0}, -(1 / 5) * (-0.25)),
    ],
)
def test_unified_loss_equals_hand_computed_numbers(loss_type, kw, expected):
    ll = LOGLIK.clone().requires_grad_(True)
    out = unified_loss(ll, ADV, token_counts=TOKENS, loss_type=loss_type, **kw)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    scale = 1 / TOKENS.float() if loss_type == "grpo" else torch.ones(3)
    assert ll.grad.tolist() == pytest.approx((-ADV * scale / out.normalizer).tolist(), rel=1e-6)
    assert out.clip == {}


def test_clipped_ratio_clips_like_ppo_and_reports_clip_ratio():
    ll = torch.tensor([0.5, -0.5, 0.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 1.0])
    out = unified_loss(ll, adv, old_loglik=torch.zeros(3), epsilon=0.2)
    # ratios e^0.5 (A>0: capped at 1.2), e^-0.5 (A<0: floored at 0.8), 1
    assert out.loss.item() == pytest.approx(-(1.2 - 0.8 + 1.0) / 3, rel=1e-6)
    assert out.clip["clip_ratio"] == pytest.approx(2 / 3)
    assert out.clip["clip_ratio/high_mean"] == pytest.approx(1 / 3)
    assert out.clip["clip_ratio/low_mean"] == pytest.approx(1 / 3)
    out.loss.backward()
    assert ll.grad.tolist() == pytest.approx([0.0, 0.0, -1 / 3], abs=1e-7)


def test_on_policy_ratio_has_the_plain_gradient():
    a = LOGLIK.clone().requires_grad_(True)
    b = LOGLIK.clone().requires_grad_(True)
    unified_loss(a, ADV).loss.backward()
    unified_loss(b, ADV, old_loglik=LOGLIK.clone(), epsilon=0.2).loss.backward()
    assert torch.allclose(a.grad, b.grad)


def test_k3_kl_per_sequence_per_token_and_per_token_mean():
    assert float(kl_k3(torch.tensor([-1.0]), torch.tensor([-1.5]))[0]) == pytest.approx(math.exp(-0.5) - 0.5)
    tok_pol, tok_ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    both = (math.exp(-0.5) + 0.5 - 1 + math.exp(1.0) - 2) / 2
    assert float(kl_k3(tok_pol, tok_ref)[0]) == pytest.approx(both)
    assert float(kl_k3(tok_pol, tok_ref, mask=torch.tensor([[1, 0]]))[0]) == pytest.approx(math.exp(-0.5) - 0.5)
    per_token_mean = float(kl_k3(torch.tensor([-3.0]), torch.tensor([-2.5]), token_counts=torch.tensor([2]))[0])
    assert per_token_mean == pytest.approx(math.exp(0.25) - 1.25)
    assert float(kl_k3(torch.tensor([-2.0]), torch.tensor([-2.0]))[0]) == 0.0


def test_sft_kl_and_none_change_exactly_the_regularizer_term():
    sft_ll, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-2.5, -4.0, -1.0])
    kw = dict(sft_loglik=sft_ll, sft_weight=1.0, ref_loglik=ref, beta=0.1)
    arms = {r: lavida_loss(LOGLIK, ADV, regularizer=r, **kw) for r in ("sft", "kl", "none")}
    pg = -(1 / 3) * (-2 + 2 - 0.25)
    for terms in arms.values():
        assert terms.pg.item() == pytest.approx(pg, rel=1e-6)
    assert arms["none"].loss.item() == pytest.approx(pg, rel=1e-6)
    assert arms["sft"].sft.item() == pytest.approx(-(1 / 3) * (-3 - 5), rel=1e-6)  # A = sft_weight, same 1/N
    assert (arms["sft"].loss - arms["none"].loss).item() == pytest.approx(8 / 3, rel=1e-6)
    k3 = [math.exp(r - ll) - (r - ll) - 1 for r, ll in zip(ref.tolist(), LOGLIK.tolist())]
    assert (arms["kl"].loss - arms["none"].loss).item() == pytest.approx(0.1 * sum(k3) / 3, rel=1e-6)
    assert arms["kl"].sft.item() == 0.0 and arms["sft"].kl.item() == 0.0 and arms["none"].kl.item() == 0.0


def test_sft_rows_never_take_the_ratio():
    ll = torch.tensor([0.5], requires_grad=True)
    sft_ll = torch.tensor([-2.0], requires_grad=True)
    out = lavida_loss(ll, torch.tensor([1.0]), sft_loglik=sft_ll, sft_weight=2.0, old_loglik=torch.tensor([0.0]))
    out.loss.backward()
    assert float(ll.grad[0]) == 0.0  # clipped rollout row
    assert float(sft_ll.grad[0]) == pytest.approx(-2.0)  # plain -A/N with N = 1 rollout row


def test_regularizer_arguments_are_checked():
    with pytest.raises(ValueError, match="sft_loglik"):
        lavida_loss(LOGLIK, ADV, regularizer="sft")
    with pytest.raises(ValueError, match="ref_loglik"):
        lavida_loss(LOGLIK, ADV, regularizer="kl", beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        lavida_loss(LOGLIK, ADV, regularizer="kl", ref_loglik=LOGLIK)
    with pytest.raises(ValueError, match="regularizer"):
        lavida_loss(LOGLIK, ADV, regularizer="l2")
    with pytest.raises(ValueError, match="token_counts"):
        unified_loss(LOGLIK, ADV, loss_type="bnpo")
    with pytest.raises(ValueError, match="max_length"):
        unified_loss(LOGLIK, ADV, loss_type="dr_grpo")




def test_sft_loss_is_the_mean_per_token_negative_elbo():
    loglik = torch.tensor([-6.0, -2.0, -3.0])
    assert sft_loss(loglik, torch.tensor([3, 4, 0])).item() == pytest.approx((2.0 + 0.5 + 3.0) / 3)
