"""DiffusionModel: Auto registration, save/load identity, padding invariance, image placeholders."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from agents.diffusion.model import DiffusionConfig, DiffusionModel

IMAGE_ID = 4


def tiny_model(seed: int = 0) -> DiffusionModel:
    torch.manual_seed(seed)
    config = DiffusionConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, image_size=32, patch_size=16,
                             max_position_embeddings=64, image_token_id=IMAGE_ID)  # fmt: skip
    return DiffusionModel(config).eval()


def inputs(batch: int = 2, length: int = 12):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(7, 40, (batch, length), generator=gen)
    ids[:, :4] = IMAGE_ID  # 4 patches of a 32 px image at patch 16
    return ids, torch.randn(batch, 3, 32, 32, generator=gen)


def test_logits_shape_and_default_size_is_about_a_million_parameters():
    model = tiny_model()
    ids, pixels = inputs()
    assert model(ids, pixels).logits.shape == (2, 12, 40)
    default = DiffusionModel(DiffusionConfig(vocab_size=300))
    assert 0.5e6 < sum(p.numel() for p in default.parameters()) < 3e6


def test_save_pretrained_from_pretrained_gives_identical_logits(tmp_path):
    model = tiny_model()
    ids, pixels = inputs()
    model.save_pretrained(tmp_path)
    for cls in (DiffusionModel, AutoModel, AutoModelForMaskedLM):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, DiffusionModel)
        assert torch.equal(loaded(ids, pixels).logits, model(ids, pixels).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiffusionConfig)


def test_left_padding_does_not_change_a_rows_logits():
    model = tiny_model()
    ids, pixels = inputs()
    padded = torch.cat([torch.zeros(2, 5, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(2, 5, dtype=torch.long), torch.ones_like(ids)], 1)
    with torch.no_grad():
        plain = model(ids, pixels).logits
        shifted = model(padded, pixels, attention_mask=mask).logits[:, 5:]
    assert torch.allclose(plain, shifted, atol=1e-5)


def test_attention_is_bidirectional_and_image_changes_outputs():
    model = tiny_model()
    ids, pixels = inputs()
    with torch.no_grad():
        base = model(ids, pixels).logits
        later = ids.clone()
        later[:, -1] = 8 if int(ids[0, -1]) != 8 else 9
        assert not torch.allclose(model(later, pixels).logits[:, 5], base[:, 5])  # earlier position sees the future
        assert not torch.allclose(model(ids, pixels + 1).logits[:, 6], base[:, 6])


def test_labels_give_a_masked_lm_loss():
    model = tiny_model()
    ids, pixels = inputs()
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    out = model(ids, pixels, labels=labels)
    logp = torch.log_softmax(out.logits.float(), -1)[:, -3:]  # the labelled positions only
    expected = -logp.gather(-1, ids[:, -3:, None]).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    labels[:, -1] = (ids[:, -1] + 1) % model.config.vocab_size  # another target changes the loss
    assert not torch.allclose(model(ids, pixels, labels=labels).loss, out.loss)
    assert model(ids, pixels).loss is None


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids, pixels = inputs()
    with pytest.raises(ValueError, match="exactly 4 image placeholder"):
        model(ids[:, 1:], pixels)
    with pytest.raises(ValueError, match="pixel_values is None"):
        model(ids)
    with pytest.raises(ValueError, match="config.image_size"):
        model(ids, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.randint(7, 40, (1, 70)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DiffusionConfig(image_size=30, patch_size=16)
