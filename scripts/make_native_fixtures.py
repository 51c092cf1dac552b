"""Write the equality fixtures of the native backbones (agents.hf) by running each model's *published* code once.

The published modeling files are never committed: download them yourself (they ship beside the weights
on the model's hub page) into a folder and point ``--code`` at it. Run this in an isolated environment
with the transformers version that code was written for, outside the repo, e.g. for Dream::

    python3 -m venv /tmp/venv-dream && /tmp/venv-dream/bin/pip install "transformers==4.46.2" torch
    /tmp/venv-dream/bin/python scripts/make_native_fixtures.py dream --code DIR_WITH_DREAM_CODE \\
        --out tests/fixtures/native/dream

For LLaDA (``llada`` and ``llada_tied``; transformers 4.46.3, LLaDA's own) ``--code`` holds
LLaDA-8B-Instruct's ``configuration_llada.py`` and ``modeling_llada.py``. For LLaDA-V (``llada_v``;
transformers 4.40.2, the LLaDA-V repo's ``transformers==4.40.0.dev0``, plus ``einops`` and
``requests`` its modules import) ``--code`` is the LLaDA-V repository's ``train`` folder (it holds ``llava/``).
``DIR_WITH_DREAM_CODE`` holds Dream-v0-Base-7B's ``configuration_dream.py``, ``modeling_dream.py`` and
``generation_utils.py``. Each function writes a tiny random-weight checkpoint in the model's own
layout (``config.json`` + ``model.safetensors``, the published key names) and ``expected.safetensors``:
``input_ids`` with masked spans and a left-padded row, the 2-D ``attention_mask`` and the published
model's fp32 ``logits`` (rows of padding positions zeroed: the published mask leaves them undefined).
The tests (tests/test_native_dream.py) load the folder with our native code and compare at atol 1e-5.
Only this script's outputs are committed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import torch

#: tiny sizes shared by the fixtures (the tests' tokenizer, tests/tiny_hf.py, has 300 tokens, mask id 4, pad 0)
VOCAB, MASK_ID, PAD_ID, EOS_ID = 300, 4, 0, 2


def _package(code: Path, name: str, modules: list[str]) -> ModuleType:
    """Import ``code`` as package ``name`` (the published files use relative imports)."""
    missing = [m for m in modules if not (code / f"{m}.py").is_file()]
    if missing:
        raise SystemExit(f"{code}: missing {', '.join(m + '.py' for m in missing)} (the model's published code)")
    package = ModuleType(name)
    package.__path__ = [str(code)]
    sys.modules[name] = package
    for module in modules:
        sub = importlib.util.spec_from_file_location(f"{name}.{module}", code / f"{module}.py")
        loaded = importlib.util.module_from_spec(sub)
        sys.modules[f"{name}.{module}"] = loaded
        sub.loader.exec_module(loaded)
        setattr(package, module, loaded)
    return package


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (norm weights around 1, biases non-zero), so a wrong wiring cannot match by chance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def _inputs(length: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows with masked spans; the second left-padded by 3."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (2, length), generator=gen)
    ids[0, 6:11] = MASK_ID
    ids[1, 9:] = MASK_ID
    ids[1, :3] = PAD_ID
    keys = torch.ones_like(ids)
    keys[1, :3] = 0
    return ids, keys


def dream(code: Path, out: Path) -> None:
    """Dream (model_type Dream): a 2-layer DreamModel of the published code, its weights and fp32 logits."""
    pkg = _package(code, "published_dream", ["configuration_dream", "generation_utils", "modeling_dream"])
    config = pkg.configuration_dream.DreamConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
        mask_token_id=MASK_ID, pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=EOS_ID, tie_word_embeddings=False,
    )  # fmt: skip
    config.architectures = ["DreamModel"]
    config.auto_map = {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
    torch.manual_seed(0)
    model = pkg.modeling_dream.DreamModel(config).float().eval()
    _randomize(model, seed=0)
    ids, keys = _inputs()
    # as Dream's generation_utils runs the model: a 4-D bool mask (query and key both real) and positions
    # counting real tokens (pads at position 1)
    mask = torch.logical_and(keys[:, None, None, :].bool(), keys[:, None, :, None].bool())
    positions = (keys.cumsum(-1) - 1).masked_fill(keys == 0, 1)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, position_ids=positions).logits.float()
    logits = logits.masked_fill(keys[..., None] == 0, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    from safetensors.torch import save_file

    save_file({"input_ids": ids, "attention_mask": keys, "logits": logits.contiguous()}, str(out / "expected.safetensors"))
    meta = {"transformers_version": __import__("transformers").__version__, "torch_version": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    (out / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {meta}")


#: LLaDA-8B-Instruct's published config.json values that the tiny LLaDA fixtures share (sizes shrunk)
LLADA_COMMON = dict(
    activation_type="silu", alibi=False, block_type="llama", block_group_size=1, include_bias=False,
    include_qkv_bias=False, layer_norm_type="rms", layer_norm_with_affine=True, rope=True, rope_full_precision=True,
    rope_theta=500000.0, rms_norm_eps=1e-5, max_sequence_length=128, vocab_size=VOCAB, embedding_size=320,
    mask_token_id=MASK_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, attention_dropout=0.0, residual_dropout=0.0,
    embedding_dropout=0.0, flash_attention=False, scale_logits=False, init_fn="mitchell", init_device="cpu",
)  # fmt: skip
LLADA_AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                  "AutoModel": "modeling_llada.LLaDAModelLM"}  # fmt: skip


def _llada(code: Path, out: Path, sizes: dict, seed: int) -> None:
    """A tiny LLaDAModelLM of the published code (LLaDA-8B's files), its weights as it saves them and fp32 logits.

    ``expected.safetensors``: ``input_ids`` (3 rows with masked spans), ``logits``; ``short_ids`` /
    ``short_logits``: row 0 without its first 3 tokens (our left-padded row 0 must give these: the
    published code puts padded rows at absolute positions, ours counts attended tokens)."""
    pkg = _package(code, "published_llada", ["configuration_llada", "modeling_llada"])
    config = pkg.configuration_llada.LLaDAConfig(**{**LLADA_COMMON, **sizes})
    model = pkg.modeling_llada.LLaDAModelLM(config, init_params=True)
    model.tie_weights()
    _randomize(model, seed=seed)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    if config.weight_tying:  # transformers 4.46 refuses to save the published tied ff_out/wte alias; safetensors keeps one name
        from safetensors.torch import save_model

        config.save_pretrained(out)
        save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    raw = json.loads((out / "config.json").read_text())
    raw["auto_map"] = LLADA_AUTO_MAP  # as on the hub
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(5, VOCAB, (3, 12), generator=gen)
    ids[0, 8:] = MASK_ID
    ids[1, 4:7] = MASK_ID
    ids[2, [1, 5, 6, 10]] = MASK_ID
    short = ids[:1, 3:].clone()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
        short_logits = model(input_ids=short).logits.float()
    from safetensors.torch import save_file

    save_file({"input_ids": ids, "logits": logits.contiguous(), "short_ids": short,
               "short_logits": short_logits.contiguous()}, str(out / "expected.safetensors"))  # fmt: skip
    meta = {"transformers_version": __import__("transformers").__version__, "torch_version": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    (out / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {meta}")


def llada(code: Path, out: Path) -> None:
    """LLaDA (model_type llada): 2 layers, grouped K/V heads (4 query, 2 kv), untied output, embedding_size > vocab_size."""
    _llada(code, out, dict(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, weight_tying=False), seed=0)


def llada_tied(code: Path, out: Path) -> None:
    """LLaDA with ``weight_tying: true`` and ``n_kv_heads: null``: 1 layer, logits from the embedding matrix."""
    _llada(code, out, dict(d_model=32, n_heads=4, n_kv_heads=None, n_layers=1, mlp_hidden_size=40, weight_tying=True), seed=1)


#: LLaDA-V's published training settings (scripts/llada_v_finetune.sh) that shape its image features
LLADA_V_MM = dict(
    mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
    mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="anyres_max_4",
    image_grid_pinpoints="(1x1),...,(6x6)", mm_patch_merge_type="spatial_unpad", mm_newline_position="grid",
)  # fmt: skip
#: the tiny SigLIP tower (27 x 27 = 729 patches: the published tower asserts that count)
LLADA_V_TOWER = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2, patch_size=2,
                     image_size=54, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")  # fmt: skip


def _llava_modules(code: Path) -> ModuleType:
    """LLaDA-V's ``llava`` package from its repo's ``train`` folder, without the package ``__init__`` files
    (they import every model, trainer and server); the vision-tower builder is its SigLIP branch only (the
    published builder imports open_clip and ImageBind towers too)."""
    root = code / "llava"
    if not (root / "model" / "language_model" / "llava_llada.py").is_file():
        raise SystemExit(f"{code}: no llava/model/language_model/llava_llada.py (pass LLaDA-V's train folder)")
    for sub in ("", "model", "model/language_model", "model/multimodal_encoder", "model/multimodal_projector",
                "model/multimodal_resampler"):  # fmt: skip
        name = ".".join(["llava", *filter(None, sub.split("/"))])
        package = ModuleType(name)
        package.__path__ = [str(root / sub)]
        sys.modules[name] = package
    siglip = importlib.import_module("llava.model.multimodal_encoder.siglip_encoder")
    builder = ModuleType("llava.model.multimodal_encoder.builder")
    builder.build_vision_tower = lambda cfg, **kw: siglip.SigLipVisionTower(cfg.mm_vision_tower, vision_tower_cfg=cfg, **kw)
    sys.modules[builder.__name__] = builder
    return importlib.import_module("llava.model.language_model.llava_llada")


def llada_v(code: Path, out: Path) -> None:
    """LLaDA-V (model_type llava_llada): a tiny LlavaLLaDAModelLM (SigLIP tower, mlp2x_gelu projector, LLaDA LM)
    of the published code (``--code``: the LLaDA-V repo's ``train`` folder; transformers 4.40), its weights and
    the fp32 logits of its generate path (``prepare_inputs_labels_for_multimodal`` then ``lm_head(model(...))``)
    on two rows, each with one square image at the tower's resolution (anyres: the resized image + one tile)
    and masked text spans. ``expected.safetensors``: ``input_ids`` (the image marker -200 once per row),
    ``pixel_values`` (2, 3, 54, 54), ``text_logits`` (the logits at the text positions), ``image_tokens``."""
    import tempfile

    llava = _llava_modules(code)
    siglip = sys.modules["llava.model.multimodal_encoder.siglip_encoder"]
    with tempfile.TemporaryDirectory() as tmp:
        tower = Path(tmp) / "siglip-tiny"  # the published builder picks the SigLIP tower by "siglip" in the name
        torch.manual_seed(0)
        siglip.SigLipVisionModel(siglip.SigLipVisionConfig(**LLADA_V_TOWER)).save_pretrained(tower)
        config = llava.LlavaLLaDAConfig(
            vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=500000.0,
            tie_word_embeddings=False, pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=EOS_ID,
            mm_vision_tower=str(tower), mm_hidden_size=LLADA_V_TOWER["hidden_size"], **LLADA_V_MM,
        )  # fmt: skip
        model = llava.LlavaLLaDAModelLM(config)
    _randomize(model, seed=2)
    model.eval()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB, (2, 20), generator=gen)
    ids[:, 2] = -200  # IMAGE_TOKEN_INDEX: where the features go
    ids[0, 12:] = MASK_ID
    ids[1, [5, 6, 9, 15, 16, 17]] = MASK_ID
    pixels = torch.rand(2, 3, 54, 54, generator=gen) * 2 - 1
    images = [torch.stack([p, p]) for p in pixels]  # process_images(anyres) of a 54 x 54 image: the resize + one tile
    with torch.no_grad():
        _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, None, None, images, ["image", "image"], image_sizes=[(54, 54), (54, 54)])
        logits = model.lm_head(model.model(inputs_embeds=embeds)[0]).float()
    image_tokens = embeds.shape[1] - (ids.shape[1] - 1)
    text = torch.cat([torch.arange(2), torch.arange(3, ids.shape[1]) + image_tokens - 1])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    raw = json.loads((out / "config.json").read_text())
    raw["mm_vision_tower"] = "google/siglip2-so400m-patch14-384"  # as published; the tiny tower's sizes:
    raw["vision_config"] = {**LLADA_V_TOWER, "num_hidden_layers": LLADA_V_TOWER["num_hidden_layers"] - 1}
    raw.pop("_name_or_path", None)
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    from safetensors.torch import save_file

    save_file({"input_ids": ids, "pixel_values": pixels.contiguous(), "text_logits": logits[:, text].contiguous(),
               "image_tokens": torch.tensor([image_tokens])}, str(out / "expected.safetensors"))  # fmt: skip
    meta = {"transformers_version": __import__("transformers").__version__, "torch_version": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters()), "image_tokens": int(image_tokens)}  # fmt: skip
    (out / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {meta}")


MODELS = {"dream": dream, "llada": llada, "llada_tied": llada_tied, "llada_v": llada_v}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``make_native_fixtures.py MODEL --code DIR --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--code", type=Path, required=True, help="folder with the model's published code files")
    parser.add_argument("--out", type=Path, required=True, help="fixture folder to write")
    args = parser.parse_args(argv)
    MODELS[args.model](args.code, args.out)


if __name__ == "__main__":
    main()
