"""Tokenizer (deterministic, digit-per-token, save/load) and image codec (exact round trips)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from transformers import AutoTokenizer

from agents.diffusion.codec import PaletteCodec, codec_from_dict, register_codec
from agents.diffusion.tokenizer import SPECIAL_TOKENS, build_tokenizer, code_token, special_ids
from lavida_envs.base import CHARSET
from lavida_envs.render import ALL_COLORS
from lavida_envs.scene import render_scene, sample_scene

TEXT = "What is the sum 12+345? <think>\\frac{1}{2} + thesis</think><answer>46</answer> √π°"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(10)


def test_build_is_deterministic(tok):
    other = build_tokenizer(10)
    assert other.get_vocab() == tok.get_vocab()
    assert other(TEXT)["input_ids"] == tok(TEXT)["input_ids"]


def test_digits_are_one_token_each(tok):
    ids = tok("2024 + 17 = 2041", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:4] == ["2", "0", "2", "4"]
    assert all(len(t) == 1 for t in tokens if any(c.isdigit() for c in t))


def test_tags_and_words_are_single_tokens_and_words_match_whole_words_only(tok):
    tokens = tok.convert_ids_to_tokens(tok(TEXT, add_special_tokens=False)["input_ids"])
    for tag in ("<think>", "</think>", "<answer>", "</answer>", "\\frac", "the", "sum"):
        assert tag in tokens
    assert "is" in tokens and "thesis" not in "".join(t for t in tokens if len(t) > 1)


def test_decode_is_lossless_on_charset_text(tok):
    text = CHARSET.replace("\r", "").replace("\x0b", "").replace("\x0c", "") + TEXT
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_special_tokens_and_codes_are_skipped_in_decode(tok):
    ids = special_ids(tok)
    assert (ids.pad, ids.eos, ids.mask) == (0, 1, 2)
    assert ids.codebook_size == 10 and tok.convert_tokens_to_ids(code_token(3)) == ids.code_start + 3
    body = tok("<answer>7</answer>", add_special_tokens=False)["input_ids"]
    noisy = body + [ids.eos, ids.mask, ids.boi, ids.code_start + 2, ids.eoi, ids.pad, ids.image]
    assert tok.decode(noisy, skip_special_tokens=True) == "<answer>7</answer>"


def test_save_load_round_trip_gives_identical_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    assert loaded.get_vocab() == tok.get_vocab() and special_ids(loaded) == special_ids(tok)
    assert set(SPECIAL_TOKENS) <= set(loaded.get_vocab())


def test_special_ids_rejects_a_foreign_tokenizer(tok, tmp_path):
    with pytest.raises(ValueError, match="build_tokenizer"):
        special_ids(type("T", (), {"get_vocab": lambda self: {"a": 0}})())
    with pytest.raises(ValueError, match="codebook_size"):
        build_tokenizer(0)


def test_codec_round_trip_exact_on_1000_procedural_scenes():
    grid = 32
    codec = PaletteCodec(grid=grid, image_size=128)
    for i in range(1000):
        scene = sample_scene(random.Random(i))
        small = render_scene(scene, grid)  # the scene at grid resolution
        codes = codec.encode(small)
        assert np.array_equal(codec.decode(codes, grid), small)
        big = codec.decode(codes)  # nearest-upsampled to 128 px
        assert big.shape == (128, 128, 3)
        assert np.array_equal(codec.encode(big), codes)


def test_encode_decode_exact_for_any_codes_and_sizes():
    codec = PaletteCodec(grid=8, image_size=64)
    rng = np.random.default_rng(0)
    for size in (8, 30, 64, 77):
        codes = rng.integers(0, codec.codebook_size, (8, 8))
        assert np.array_equal(codec.encode(codec.decode(codes, size)), codes)
    assert codec.codebook_size == len(ALL_COLORS)


def test_encode_majority_vote_and_nearest_colour():
    codec = PaletteCodec(grid=2, image_size=4)
    img = np.full((4, 4, 3), 255, np.uint8)
    img[0, 0] = (5, 5, 5)  # near-black: one of four pixels in cell (0, 0)
    img[2:, 2:] = (228, 30, 70)  # near-red: the whole cell (1, 1)
    codes = codec.encode(img)
    assert codes.tolist() == [[0, 0], [0, 2]]


def test_codec_bad_inputs_raise_clear_errors():
    codec = PaletteCodec(grid=4, image_size=16)
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        codec.decode(np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        codec.decode(np.full((4, 4), 12))
    with pytest.raises(ValueError, match="unknown codec"):
        codec_from_dict({"type": "nope"})


def test_codec_serialises_and_custom_codecs_register():
    codec = PaletteCodec(grid=4, image_size=16, colors=((0, 0, 0), (255, 255, 255)))
    again = codec_from_dict(codec.to_dict())
    assert again.to_dict() == codec.to_dict() and again.codebook_size == 2

    class Tiny(PaletteCodec):
        def to_dict(self):
            return dict(super().to_dict(), type="tiny")

    register_codec("tiny", Tiny)
    assert isinstance(codec_from_dict(Tiny(grid=2, image_size=4).to_dict()), Tiny)


def test_nearest_colour_fast_path_matches_brute_force():
    codec = PaletteCodec(grid=4, image_size=32)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    mixed = codec.palette[rng.integers(0, codec.codebook_size, (32, 32))].astype(np.uint8)
    mixed[::3] = noise[::3]
    for img in (noise, mixed):
        brute = ((img.astype(np.int64)[:, :, None] - codec.palette[None, None]) ** 2).sum(-1).argmin(-1)
        assert np.array_equal(codec.nearest(img), brute)
