"""Write the equality fixtures of the native backbones (agents.hf) by running each model's *published* code once.

The published modeling files are never committed: download them yourself (they ship beside the weights
on the model's hub page) into a folder and point ``--code`` at it. Run this in an isolated environment
with the transformers version that code was written for, outside the repo, e.g. for Dream::

    python3 -m venv /tmp/venv-dream && /tmp/venv-dream/bin/pip install "transformers==4.46.2" torch
    /tmp/venv-dream/bin/python scripts/make_native_fixtures.py dream --code DIR_WITH_DREAM_CODE \\
        --out tests/fixtures/native/dream

For LLaDA (``llada`` and ``llada_tied``; transformers 4.46.3, LLaDA's own) ``--code`` holds
LLaDA-8B-Instruct's ``configuration_llada.py`` and ``modeling_llada.py``.
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


MODELS = {"dream": dream, "llada": llada, "llada_tied": llada_tied}


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
