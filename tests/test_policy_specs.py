"""resolve_policy: every spec form resolves to a working Policy; bad specs give errors that say why."""

from __future__ import annotations

import json
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs  # noqa: F401
from agents.policy import CallablePolicy
from baselines.simple import ConstantPolicy, OraclePolicy, RandomPolicy
from baselines.specs import resolve_policy

OBS = {"prompt": "What is 1 + 1?", "image": np.zeros((16, 16, 3), np.uint8)}


def test_simple_specs_with_options():
    policy = resolve_policy("random", seed=7)
    assert isinstance(policy, RandomPolicy) and policy.seed == 7
    assert isinstance(resolve_policy("constant", text="<answer>1</answer>"), ConstantPolicy)
    assert resolve_policy(" constant ").act([OBS]) == [["<think></think><answer>0</answer>"]]
    env = gym.make("LaViDa/VisualMath-v0", split="test")
    oracle = resolve_policy("oracle", env=env, indices=[0, 1])
    assert isinstance(oracle, OraclePolicy) and len(oracle) == 2
    with pytest.raises(ValueError, match="'random' does not accept the options \\['temperature'\\]"):
        resolve_policy("random", temperature=1.0)


def test_hf_specs_resolve_to_the_adapters(tmp_path):
    from agents.hf.policy import HFDiffusionPolicy
    from baselines.hf_causal import HFCausalLMPolicy
    from baselines.hf_vlm import HFVLMPolicy
    from tiny_hf import save_tiny_causal_lm, save_tiny_masked_lm, save_tiny_vlm

    causal = save_tiny_causal_lm(tmp_path / "causal")
    policy = resolve_policy(f"hf:{causal}", max_new_tokens=3)
    assert isinstance(policy, HFCausalLMPolicy) and policy.max_new_tokens == 3
    assert isinstance(resolve_policy(f"hf-vlm:{save_tiny_vlm(tmp_path / 'vlm')}"), HFVLMPolicy)
    dllm = resolve_policy(f"hf-dllm:{save_tiny_masked_lm(tmp_path / 'mlm')}", gen_length=8, steps=4, block_length=8)
    assert isinstance(dllm, HFDiffusionPolicy) and dllm.decoding.steps == 4  # the trainable class (agents.specs)
    assert len(dllm.act([OBS], num_samples=2)[0]) == 2
    with pytest.raises(ValueError, match="needs a directory after 'hf-vlm:'"):
        resolve_policy("hf-vlm:")
    with pytest.raises(FileNotFoundError, match="missing_model"):
        resolve_policy(f"hf:{tmp_path / 'missing_model'}")
    with pytest.raises(ValueError, match=f"not a LaViDa checkpoint.*use hf:{causal}"):
        resolve_policy(str(causal))


def test_checkpoint_directory_loads_the_diffusion_policy(tmp_path):
    from agents.diffusion.policy import DecodingConfig, DiffusionPolicy

    decoding = DecodingConfig(gen_length=8, steps=4, block_length=8)
    DiffusionPolicy.tiny(seed=0, decoding=decoding).save_pretrained(str(tmp_path / "ckpt"))
    policy = resolve_policy(str(tmp_path / "ckpt"))
    assert isinstance(policy, DiffusionPolicy) and policy.decoding.steps == 4
    env = gym.make("LaViDa/VisualMath-v0", split="test").unwrapped
    obs = env.reset(options={"index": 0})[0]
    action = policy.act([obs])[0][0]
    assert isinstance(action, str)
    env.step(action)


def test_bad_checkpoint_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no policy_config.json"):
        resolve_policy(str(tmp_path / "empty"))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "policy_config.json").write_text(json.dumps({"format": "mystery"}))
    with pytest.raises(ValueError, match="unknown checkpoint format 'mystery'; known: \\['lavida-ar-policy'"):
        resolve_policy(str(odd))
    (odd / "policy_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read policy_config.json"):
        resolve_policy(str(odd))


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    code = textwrap.dedent(
        """
        from baselines.simple import ConstantPolicy

        POLICY = ConstantPolicy("fixed")
        NOT_A_FACTORY = 3

        def make(text="<answer>2</answer>"):
            return ConstantPolicy(text, echo_image=False)

        def make_callable():
            return lambda obs: obs["prompt"].upper()

        def make_junk():
            return 42
        """
    )
    (tmp_path / "my_policies.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_policies.py"


def test_module_factory_specs(factory_module):
    assert resolve_policy("my_policies:make").act([OBS]) == [["<answer>2</answer>"]]
    assert resolve_policy("my_policies:make", text="x").act([OBS]) == [["x"]]
    wrapped = resolve_policy("my_policies:make_callable")
    assert isinstance(wrapped, CallablePolicy) and wrapped.act([OBS], 2) == [["WHAT IS 1 + 1?"] * 2]
    assert resolve_policy("my_policies:POLICY").act([OBS]) == [["fixed"]]
    assert resolve_policy(f"{factory_module}:make").act([OBS]) == [["<answer>2</answer>"]]


def test_module_factory_errors(factory_module, tmp_path):
    with pytest.raises(ValueError, match="returned a int; expected a Policy"):
        resolve_policy("my_policies:make_junk")
    with pytest.raises(ValueError, match="has no attribute 'nothing'"):
        resolve_policy("my_policies:nothing")
    with pytest.raises(ValueError, match="'NOT_A_FACTORY' is a int, not a factory"):
        resolve_policy("my_policies:NOT_A_FACTORY")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        resolve_policy("no_such_module_xyz:make")
    with pytest.raises(ValueError, match="file .*absent.py' not found"):
        resolve_policy(f"{tmp_path / 'absent.py'}:make")
    with pytest.raises(ValueError, match=r"cannot call make_callable\(\*\*\['seed'\]\)"):
        resolve_policy("my_policies:make_callable", seed=1)


def test_unknown_specs_list_the_forms():
    with pytest.raises(ValueError, match="unknown policy spec 'gpt5'; expected one of: random \\| constant"):
        resolve_policy("gpt5")
    with pytest.raises(ValueError, match="no such directory"):
        resolve_policy("./runs/missing_ckpt")
    with pytest.raises(ValueError, match="non-empty string"):
        resolve_policy("  ")


def test_package_exports_resolve():
    import baselines

    for name in baselines.__all__:
        assert getattr(baselines, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        baselines.Nope  # noqa: B018
