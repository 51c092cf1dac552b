"""HF adapters on tiny random models built offline: valid env actions, seeding, clear load errors."""

from __future__ import annotations

import json
import sys
import warnings

import gymnasium as gym
import pytest
import torch

import lavida_envs  # noqa: F401
from baselines.hf import model_kinds
from baselines.hf_causal import HFCausalLMPolicy
from baselines.hf_vlm import HFVLMPolicy
from baselines.specs import resolve_policy
from tiny_hf import (
    save_tiny_causal_lm,
    save_tiny_masked_lm,
    save_tiny_remote_dllm,
    save_tiny_vlm,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*text-only.*:UserWarning")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        "causal": save_tiny_causal_lm(root / "causal"),
        "causal_plain": save_tiny_causal_lm(root / "causal_plain", chat_template=False),
        "vlm": save_tiny_vlm(root / "vlm"),
        "mlm": save_tiny_masked_lm(root / "mlm"),
        "mlm_tokmask": save_tiny_masked_lm(root / "mlm_tokmask", mask_in_config=False),
    }


@pytest.fixture(scope="module")
def math_env():
    return gym.make("LaViDa/VisualMath-v0", split="test").unwrapped


def _observations(env, n=3):
    return [env.reset(options={"index": i})[0] for i in range(n)]


def _assert_valid_actions(env, observations, actions, num_samples):
    assert len(actions) == len(observations)
    for i, row in enumerate(actions):
        assert len(row) == num_samples and all(isinstance(a, str) for a in row)
        env.reset(options={"index": i})
        _, reward, terminated, _, info = env.step(row[0])
        assert terminated and 0.0 <= reward <= 1.0 and "reward_components" in info


def test_causal_lm_greedy_gives_valid_actions_and_warns_once(dirs, math_env):
    policy = HFCausalLMPolicy(dirs["causal"], max_new_tokens=6)
    obs = _observations(math_env)
    with pytest.warns(UserWarning, match="text-only: observation images are ignored"):
        actions = policy.act(obs, num_samples=2)
    _assert_valid_actions(math_env, obs, actions, 2)
    assert all(row[0] == row[1] for row in actions)  # greedy: identical samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert policy.act(obs, num_samples=2) == actions  # deterministic, no second warning
    assert policy.decoding_settings()["adapter"] == "hf"


def test_causal_lm_chat_template_or_plain_prompt(dirs, math_env):
    obs = _observations(math_env, 1)[0]
    chat = HFCausalLMPolicy(dirs["causal"], max_new_tokens=2)
    assert chat.prompt_text(obs) == f"user: {obs['prompt']}\nassistant: "
    plain = HFCausalLMPolicy(dirs["causal_plain"], max_new_tokens=2)
    assert plain.prompt_text(obs) == obs["prompt"] and not plain.use_chat_template
    with pytest.raises(ValueError, match="no chat template"):
        HFCausalLMPolicy(dirs["causal_plain"], use_chat_template=True)


def test_causal_lm_sampling_is_seeded_per_observation(dirs, math_env):
    obs = _observations(math_env, 3)
    policy = HFCausalLMPolicy(dirs["causal"], max_new_tokens=8, temperature=1.5, seed=1)
    together = policy.act(obs, num_samples=3)
    alone = [policy.act([o], num_samples=3)[0] for o in obs]
    assert together == alone
    assert any(len(set(row)) > 1 for row in together)
    assert HFCausalLMPolicy(dirs["causal"], max_new_tokens=8, temperature=1.5, seed=2).act(obs, 3) != together
    batched = HFCausalLMPolicy(dirs["causal"], max_new_tokens=4, batch_prompts=True).act(obs, 2)
    _assert_valid_actions(math_env, obs, batched, 2)


def test_vlm_sees_the_image_and_gives_valid_actions(dirs, math_env):
    policy = HFVLMPolicy(dirs["vlm"], max_new_tokens=5)
    obs = _observations(math_env, 2)
    inputs = policy.model_inputs(obs[:1])
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 16, 16)
    assert policy.prompt_text(obs[0]).startswith("user: <image>")
    actions = policy.act(obs, num_samples=2)
    _assert_valid_actions(math_env, obs, actions, 2)
    blank = dict(obs[0], image=obs[0]["image"] * 0)
    assert not torch.equal(policy.model_inputs([blank])["pixel_values"], inputs["pixel_values"])
    assert policy.decoding_settings()["adapter"] == "hf-vlm"


def test_vlm_rejects_bad_images(dirs):
    policy = HFVLMPolicy(dirs["vlm"], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        policy.act([{"prompt": "x", "image": torch.zeros(4, 4).numpy()}])


def _count_calls(model):
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls


def _dllm(folder, **kw):
    """``hf-dllm:`` as ``lavida eval`` resolves it: the trainable HFDiffusionPolicy (agents.specs)."""
    from agents.hf.policy import HFDiffusionPolicy

    policy = resolve_policy(f"hf-dllm:{folder}", **kw)
    assert isinstance(policy, HFDiffusionPolicy)
    return policy


def test_dllm_is_driven_by_our_sampler(dirs, math_env):
    # a masked LM transformers knows (BERT) under hf-dllm: no remote code, logits at i predict token i
    policy = _dllm(dirs["mlm"], gen_length=16, steps=8, block_length=8)
    assert policy.model.kind == "llada" and not policy.remote_code
    calls = _count_calls(policy.model.backbone)
    obs = _observations(math_env, 2)
    actions = policy.act(obs, num_samples=2)
    _assert_valid_actions(math_env, obs, actions, 2)
    assert 0 < len(calls) <= 2 * 8  # at most one model call per denoising step per observation
    assert policy.model.config.mask_token_id == policy.tokenizer.mask_token_id
    settings = policy.decoding_settings()
    assert (settings["gen_length"], settings["steps"], settings["block_length"]) == (16, 8, 8)
    assert policy.act(obs, num_samples=2) == actions


def test_dllm_sampling_seeded_and_mask_id_from_tokenizer(dirs, math_env):
    obs = _observations(math_env, 2)
    policy = _dllm(dirs["mlm_tokmask"], gen_length=8, steps=8, block_length=8, temperature=1.0)
    assert policy.model.config.mask_token_id == policy.tokenizer.mask_token_id
    together = policy.act(obs, num_samples=3)
    assert together == policy.act(obs, num_samples=3)
    assert any(len(set(row)) > 1 for row in together)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _dllm(dirs["mlm"], mask_token_id=10**6)
    with pytest.raises(ValueError, match=r"does not accept the options \['beams'\]"):
        _dllm(dirs["mlm"], beams=2)


def test_dllm_remote_code_is_opt_in(tmp_path, monkeypatch, math_env):
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = save_tiny_remote_dllm(tmp_path / "llada_like")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        _dllm(folder)
    policy = _dllm(folder, trust_remote_code=True, gen_length=8, steps=4, block_length=8)
    assert policy.model.config.mask_token_id == json.loads((folder / "config.json").read_text())["mask_token_id"]
    assert policy.use_chat_template and policy.remote_code
    obs = _observations(math_env, 1)
    _assert_valid_actions(math_env, obs, policy.act(obs), 1)


@pytest.mark.parametrize("cls", [HFCausalLMPolicy, HFVLMPolicy])
def test_missing_directory_names_the_path_and_the_expected_model(cls, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"nope.*not a local directory; expected a Hugging Face"):
        cls(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        cls(tmp_path / "empty")


@pytest.mark.parametrize(
    "cls, wrong, found, expected, hint",
    [
        (HFCausalLMPolicy, "vlm", "llava", "causal LM", "hf-vlm:"),
        (HFCausalLMPolicy, "mlm", "bert", "causal LM", "hf-dllm:"),
        (HFVLMPolicy, "causal", "llama", "vision-language", "hf:"),
    ],
)
def test_wrong_kind_of_model_is_a_clear_error(dirs, cls, wrong, found, expected, hint):
    with pytest.raises(ValueError) as err:
        cls(dirs[wrong])
    message = str(err.value)
    assert str(dirs[wrong]) in message and repr(found) in message and expected in message and hint in message


def test_model_kinds_follow_the_auto_mappings(dirs):
    from transformers import AutoConfig

    def kinds(name):
        return model_kinds(AutoConfig.from_pretrained(dirs[name], local_files_only=True))

    assert kinds("causal") == ["causal"]
    assert kinds("vlm") == ["vlm"]
    assert set(kinds("mlm")) == {"causal", "masked"}  # BERT: refused as a causal LM (encoder-only)


@pytest.mark.parametrize("mask_in_config", [True, False])
def test_hf_refuses_a_diffusion_lm_and_names_hf_dllm(tmp_path, monkeypatch, mask_in_config):
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    # LLaDA's config maps AutoModelForCausalLM to a model without generate()
    folder = save_tiny_remote_dllm(tmp_path / "llada_like", causal_auto_map=True, mask_in_config=mask_in_config)
    for trust in (False, True):
        if not mask_in_config and not trust:
            continue  # then the config itself needs remote code (the existing hint says so)
        with pytest.raises(ValueError) as err:
            HFCausalLMPolicy(folder, trust_remote_code=trust)
        message = str(err.value)
        assert "masked-diffusion LM" in message and f"hf-dllm:{folder}" in message and "trust_remote_code" in message
    with pytest.raises(ValueError, match="hf-dllm:"):
        resolve_policy(f"hf:{folder}", trust_remote_code=True)
    assert _dllm(folder, trust_remote_code=True, gen_length=8, steps=4, block_length=8, mask_token_id=4)


def test_qwen2_vl_style_model_runs_under_hf_vlm_without_torchvision(tmp_path, math_env):
    from tiny_hf import save_tiny_qwen2_vl

    folder = save_tiny_qwen2_vl(tmp_path / "qwen2vl")
    policy = HFVLMPolicy(folder, max_new_tokens=4)
    assert type(policy.processor).__name__.startswith("Qwen2VLProcessor") and policy.use_chat_template
    obs = _observations(math_env, 2)
    _assert_valid_actions(math_env, obs, policy.act(obs), 1)


def test_a_processor_that_needs_torchvision_says_what_to_install(tmp_path, monkeypatch):
    import transformers

    from baselines.hf_vlm import images_only_processor, torchvision_hint

    assert f"torch {torch.__version__}" in torchvision_hint() and "pip install torchvision" in torchvision_hint()
    folder = save_tiny_vlm(tmp_path / "vlm")
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "LlavaProcessor"}))
    missing = ImportError("FooVideoProcessor requires the Torchvision library but it was not found")
    with pytest.raises(ImportError, match=r"vlm.*requires the Torchvision library.*pip install torchvision"):
        images_only_processor(folder, False, missing)  # LLaVA has no video processor to leave out

    def no_torchvision(*args, **kwargs):
        raise missing

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_torchvision)
    with pytest.raises(ImportError, match=r"matches torch .*torchvision 0\.\d+"):
        HFVLMPolicy(folder)
