"""agents.check_policy: our two backbones pass; a deliberately broken policy fails with the right messages."""

from __future__ import annotations

import pytest
import torch

from agents import DiffusionPolicy
from agents.autoregressive import ARPolicy
from agents.policy_check import PolicyCheckError, check_policy


def test_diffusion_policy_passes_on_a_text_and_an_image_task():
    assert check_policy(DiffusionPolicy.tiny(seed=0), env_ids=["LaViDa/VisualMath-v0", "LaViDa/ImageEdit-v0"]) == []


def test_ar_policy_passes_declaring_no_forcing_and_no_tree_search():
    assert check_policy(ARPolicy.tiny(seed=0)) == []


class NoisyPolicy(DiffusionPolicy):
    """Ignores forced suffixes; its likelihood masks come from the global RNG, not mask_seed."""

    def rollout(self, observations, num_samples=1, forced=None, generator=None):
        return super().rollout(observations, num_samples, None, generator)

    def log_likelihood_terms(self, rollouts, estimator="complementary", mask_seed=0, num_samples=1, prompt_mask_prob=0.0):
        return super().log_likelihood_terms(rollouts, estimator, int(torch.randint(0, 10**6, ())), num_samples)


class PromptScorer(DiffusionPolicy):
    """Its scored mask covers the prompt."""

    def scored_mask(self, rollouts):
        return rollouts.attention_mask.clone()


def _broken(cls):
    base = DiffusionPolicy.tiny(seed=0)
    return cls(base.model, base.tokenizer, base.codec, base.decoding)


def test_a_broken_policy_fails_with_what_is_wrong_and_how_to_fix_it():
    problems = check_policy(_broken(NoisyPolicy))
    text = "\n".join(str(p) for p in problems)
    assert {"forcing", "likelihood"} <= {p.check for p in problems}, text
    assert "forced suffix '<answer>7</answer>' not honoured" in text
    assert "two calls with mask_seed 0 gave" in text and "seeded by mask_seed" in text
    with pytest.raises(PolicyCheckError, match="not honoured"):
        check_policy(_broken(NoisyPolicy), raise_on_failure=True)
    problems = check_policy(_broken(PromptScorer))
    text = "\n".join(str(p) for p in problems)
    assert "scored_mask covers" in text and "score only response positions" in text


def test_an_object_without_the_contract_names_the_missing_members():
    class Half:
        def act(self, observations, num_samples=1):
            return [["x"] * num_samples for _ in observations]

    (problem,) = check_policy(Half())
    assert problem.check == "members" and "rollout_from" in problem.problem and "sft_rollouts" in problem.problem
