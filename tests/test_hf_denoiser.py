"""The HF denoiser base (agents.hf.denoiser): text-only special ids, vocab size from the config, scoring."""

from __future__ import annotations

import pytest
import torch

from agents.hf.denoiser import text_special_ids
from agents.hf.policy import HFDenoiser, HFDiffusionPolicy
from tiny_dllm import save_qwen2

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return HFDiffusionPolicy.from_hf(save_qwen2(tmp_path_factory.mktemp("hf_denoiser") / "q", hidden=32, layers=1), "a2d")


def test_a_gold_token_equal_to_the_mask_id_is_still_scored(policy):
    # The old ids aliased <boi>/<eoi> to the mask id, so scored_mask dropped every response position holding it.
    mask = policy.ids.mask
    obs = {"prompt": "What is 1+1?", "task": "visual_math"}
    rollouts = policy.sft_rollouts([obs], ["<answer>2</answer>"])
    response = rollouts.response_mask[0].bool()
    first = int(response.nonzero()[0])
    rollouts.sequences[0, first] = mask
    assert torch.equal(policy.scored_mask(rollouts)[0], response)


def test_the_mask_tokens_text_in_a_reference_answer_is_spelled_and_scored(policy):
    # "<mask>" typed in a reference answer is text: ordinary tokens (never the mask id, which the likelihood
    # refuses in a response), each scored, and it decodes back to the same text.
    obs = {"prompt": "What is 1+1?", "task": "visual_math"}
    text = "<answer>2 <mask> 3</answer>"
    rollouts = policy.sft_rollouts([obs], [text])
    row, response = rollouts.sequences[0], rollouts.response_mask[0].bool()
    assert not bool((row[response] == policy.ids.mask).any())
    assert policy.tokenizer.decode(row[response], skip_special_tokens=True) == text
    assert torch.equal(policy.scored_mask(rollouts)[0], response)
    est = policy.log_likelihood_terms(rollouts, "mean_field", mask_seed=0)
    assert bool((est.token_logp[0][response] != 0).all()) and bool(torch.isfinite(est.loglik).all())


def test_text_special_ids_have_no_image_tokens_and_an_empty_code_range():
    ids = text_special_ids(pad=0, eos=2, mask=4, vocab_size=300)
    assert (ids.boi, ids.eoi, ids.unk, ids.image) == (None, None, None, None) and ids.codebook_size == 0
    assert ids.present("mask", "pad", "image", "boi", "eoi") == [4, 0]
    seq = torch.tensor([[4, 0, 7, 4]])
    assert ids.is_any(seq, "boi", "eoi").sum() == 0 and ids.is_any(seq, "mask").tolist() == [[True, False, False, True]]


def test_vocab_size_comes_from_the_config_not_the_weight_shape(policy):
    # Under ZeRO-3 init every weight is an empty placeholder: the output embedding's shape[0] is 0.
    backbone = policy.model.backbone
    saved = backbone.lm_head.weight
    try:
        backbone.lm_head.weight = torch.nn.Parameter(torch.empty(0))
        model = HFDenoiser(backbone, "a2d", policy.ids.mask, 10)  # a limit below the vocab: no fallback to it
    finally:
        backbone.lm_head.weight = saved
    assert model.config.vocab_size == backbone.config.vocab_size == policy.model.config.vocab_size


def test_embedding_rows_come_from_the_config_not_a_partitioned_weight():
    from types import SimpleNamespace

    from agents.hf.denoiser import embedding_rows

    embedding = torch.nn.Embedding(301, 4)
    embedding.weight = torch.nn.Parameter(torch.empty(0))  # what DeepSpeed ZeRO-3 leaves on a partitioned parameter
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=301), get_input_embeddings=lambda: embedding)
    assert embedding_rows(model) == 301
    model.config = SimpleNamespace()  # no vocab_size: the embedding's own row count
    assert embedding_rows(model) == 301
