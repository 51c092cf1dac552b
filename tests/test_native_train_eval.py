"""Issue 21, done when: each published dLLM folder (published config + weights, no code file) trains under
``lavida train --policy hf-dllm:DIR`` with no trust flag (2 SFT + 2 RL steps), its checkpoint evaluates under
``lavida eval --policy CHECKPOINT``, and a run resumed from its step-2 checkpoint ends bit-exactly as the whole run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evaluation.cli import main
from test_native_llada import llada_folder
from test_native_llada_v import llada_v_folder
from tiny_dllm import DREAM_FIXTURE
from tiny_hf import build_tokenizer

torch.set_num_threads(1)

TINY = str(Path(__file__).parent / "fixtures" / "trainer" / "tiny.yaml")  # configs/demo.yaml shrunk to seconds
SHRINK = ["--sft_steps", "2", "--max_steps", "2", "--save_every", "2", "--prompts_per_step", "1", "--sft_per_step", "1",
          "--gen_length", "8", "--steps", "4", "--block_length", "8", "--tree_branch_steps", "[0]"]  # fmt: skip


def _dream_folder(path: Path) -> Path:
    shutil.copytree(DREAM_FIXTURE, path, ignore=shutil.ignore_patterns("expected.safetensors", "fixture.json"))
    build_tokenizer(chat_template=True).save_pretrained(path)
    return path


FOLDERS = {"llada": llada_folder, "dream": _dream_folder, "llada_v": llada_v_folder}
MODEL_TYPES = {"llada": "llada", "dream": "Dream", "llada_v": "llava_llada"}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_a_published_folder_trains_evaluates_and_resumes_bit_exactly(name, tmp_path):
    from agents.metrics_log import MetricsLog

    folder = FOLDERS[name](tmp_path / name)
    assert not list(folder.glob("*.py"))
    whole = tmp_path / "whole"
    assert main(["train", "--config", TINY, "--policy", f"hf-dllm:{folder}", "--output_dir", str(whole), *SHRINK]) == 0
    rows = MetricsLog.read(str(whole / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and sum("reward" in r for r in rows) == 2  # 2 SFT + 2 RL steps
    saved = json.loads((whole / "config.json").read_text())
    assert saved["model_type"] == MODEL_TYPES[name] and not list(whole.glob("*.py"))  # the published layout
    evaluation = tmp_path / "eval"
    assert main(["eval", "--policy", str(whole), "--env", "LaViDa/VisualMath-v0", "--env-kwargs", "image_size=32",
                 "--episodes", "1", "--out", str(evaluation)]) == 0  # fmt: skip
    assert (evaluation / "results.json").is_file()
    broken = tmp_path / "broken"  # the run as it stood at its step-2 checkpoint (no final save), resumed by a new command
    resume = broken / "checkpoint-2"
    shutil.copytree(whole / "checkpoint-2", resume)
    kept = [line for line in (whole / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 2]
    (broken / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    assert main(["train", "--config", TINY, "--policy", f"hf-dllm:{folder}", "--output_dir", str(broken),
                 "--resume_from", str(resume), *SHRINK]) == 0  # fmt: skip
    wall = {"time", "tokens_per_s", "cpu_time"}
    strip = lambda run: [{k: v for k, v in r.items() if k not in wall} for r in MetricsLog.read(str(run / "metrics.jsonl"))]  # noqa: E731
    assert strip(broken) == strip(whole)
    a, b = (load_file(str(run / "model.safetensors")) for run in (whole, broken))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
