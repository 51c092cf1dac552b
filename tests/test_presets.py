"""Baseline presets: ar_grpo (AR GRPO+KL, TRL's names and defaults), d1 and unigrpo (diffusion RL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.config import load_config
from agents.rollout import ForcingConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: preset -> its intended change of demo.yaml (besides output_dir)
PRESETS = {
    "ar_grpo": {
        "policy": "ar", "regularizer": "kl", "beta": 0.04, "gamma": 0.0, "loss_type": "dapo",
        "num_generations": 8, "answer_forcing": False, "tree_search": [], "learning_rate": 1e-5,
    },
    "d1": {
        "likelihood": "mean_field", "prompt_mask_prob": 0.15, "regularizer": "kl", "beta": 0.04, "gamma": 0.0, "epsilon": 0.5,
        "updates_per_batch": 12, "answer_forcing": False, "tree_search": [],
    },
    "unigrpo": {
        "likelihood": "random_mask", "regularizer": "kl", "beta": 0.04, "gamma": 0.0, "answer_forcing": False,
        "tree_search": [],
    },
}  # fmt: skip
#: TRL GRPOConfig's defaults for the names the trainer shares (beta aside: GRPO+KL needs beta > 0)
TRL_DEFAULTS = {"loss_type": "dapo", "scale_rewards": "group", "epsilon": 0.2, "epsilon_high": None,
                "num_generations": 8, "updates_per_batch": 1, "temperature": 1.0}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_the_demo_plus_exactly_its_recipe(name):
    demo = load_config(str(CONFIGS / "demo.yaml")).to_dict()
    preset = load_config(str(CONFIGS / f"{name}.yaml")).to_dict()
    assert preset["output_dir"] == f"runs/{name}"
    differs = {k for k in demo if demo[k] != preset[k]} - {"output_dir"}
    assert differs == {k for k, v in PRESETS[name].items() if demo[k] != v}
    for key, value in PRESETS[name].items():
        assert preset[key] == value, key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_baselines_are_plain_grpo_with_kl_and_no_lavida_extras(name):
    c = load_config(str(CONFIGS / f"{name}.yaml"))
    assert c.regularizer == "kl" and c.beta > 0 and c.gamma == 0.0
    forcing = ForcingConfig.from_config(c)  # what the rollouts use
    assert not any(forcing.suffix(t, "1") for t in c.tasks) and not any(c.uses_tree_search(t) for t in c.tasks)


def test_ar_grpo_keeps_trl_grpo_names_and_defaults():
    c = load_config(str(CONFIGS / "ar_grpo.yaml"))
    assert {k: getattr(c, k) for k in TRL_DEFAULTS} == TRL_DEFAULTS
    try:
        from trl import GRPOConfig  # the optional [trl] extra: compare with the installed TRL too
    except ImportError:
        return
    trl = GRPOConfig.__dataclass_fields__
    ours = dict(TRL_DEFAULTS, num_iterations=TRL_DEFAULTS["updates_per_batch"])
    for name in ("loss_type", "scale_rewards", "epsilon", "epsilon_high", "num_generations", "num_iterations", "temperature"):
        assert trl[name].default == ours[name], name


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"prompt_mask_prob": 1.0}, r"TrainConfig.prompt_mask_prob=1.0: must be in \[0, 1\)"),
        ({"likelihood": "complementary"}, r"TrainConfig.prompt_mask_prob=0.15: prompt masking is a 'mean_field' option"),
    ],
)
def test_prompt_masking_is_a_mean_field_option_in_range(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(str(CONFIGS / "d1.yaml"), **overrides)
