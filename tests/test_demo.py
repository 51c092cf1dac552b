"""lavida demo (the learning testbed), lavida plot and lavida ablate's chart: structure, not learning speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from agents.config import load_config
from evaluation import cli, demo, plot
from evaluation.ablation_table import write_table

CONFIGS = Path(demo.CONFIG_DIR)
#: what configs/testbed.yaml changes in demo.yaml, and testbed_d1.yaml in d1.yaml
TESTBED = {"tasks": {"visual_math": 1.0}, "prompts_per_step": 8, "num_generations": 8, "sft_per_step": 8,
           "learning_rate": 5e-5, "max_steps": 30, "eval_every": 10, "eval_episodes": 64}  # fmt: skip
#: tiny settings for a pipeline run in seconds (same stages and files as the full demo)
TINY = {"steps": 4, "block_length": 32, "prompts_per_step": 1, "num_generations": 2, "sft_per_step": 2}


def _cfg(name: str) -> dict:
    return load_config(str(CONFIGS / name)).to_dict()


@pytest.mark.parametrize("preset, base", [("testbed.yaml", "demo.yaml"), ("testbed_d1.yaml", "d1.yaml")])
def test_testbed_presets_are_their_base_plus_the_same_changes(preset, base):
    a, b = _cfg(preset), _cfg(base)
    assert {k for k in a if a[k] != b[k]} == set(TESTBED) | {"output_dir"}
    assert {k: a[k] for k in TESTBED} == TESTBED


def test_testbed_ar_keeps_its_learning_rate_and_shares_the_rollout_budget():
    ar, base, recipe = _cfg("testbed_ar.yaml"), _cfg("ar_grpo.yaml"), _cfg("testbed.yaml")
    shared = ("tasks", "prompts_per_step", "num_generations", "max_steps", "eval_every", "eval_episodes",
              "difficulty", "image_size", "gen_length", "task_decoding")  # fmt: skip
    assert {k: ar[k] for k in shared} == {k: recipe[k] for k in shared}
    assert ar["learning_rate"] == base["learning_rate"] == 1e-5 and ar["policy"] == "ar"
    sft = _cfg("testbed_sft.yaml")
    assert (sft["phase"], sft["sft_per_step"], sft["max_steps"], sft["tasks"]) == ("sft", 32, 600, {"visual_math": 1.0})


def test_budget_flags_and_their_errors():
    assert demo.budget_of(demo._parse([])) == demo.FULL
    assert demo.budget_of(demo._parse(["--quick", "--rl-steps", "5"])).rl_steps == 5
    with pytest.raises(ValueError, match="--episodes must be >= 1, got 0"):
        demo.budget_of(demo._parse(["--episodes", "0"]))
    with pytest.raises(ValueError, match="--sft-steps 700 is past the schedule's end"):
        demo.budget_of(demo._parse(["--sft-steps", "700"]))
    with pytest.raises(SystemExit) as info:
        demo.main(["--episodes", "0"])
    assert info.value.code == 2


def test_demo_pipeline_writes_every_row_the_board_and_the_curves(tmp_path, monkeypatch, capsys):
    real = demo._config
    monkeypatch.setattr(demo, "_config", lambda name, **kw: real(name, **{**kw, **TINY}))
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--sft-steps", "2", "--sft-schedule", "4", "--rl-steps", "1", "--more-sft-steps", "2",
            "--episodes", "2", "--curve-episodes", "1", "--sft-eval-every", "1", "--rl-eval-every", "1", "--threads", "1",
            "--jobs", "2"]  # fmt: skip
    assert demo.main(argv) == 0, capsys.readouterr()
    ar_log = (out / "logs" / "ar_track.log").read_text()  # the AR track ran in the second process
    assert "=== AR SFT start" in ar_log and "=== AR GRPO+KL" in ar_log and "=== lavida-r1" not in ar_log
    budget = demo.budget_of(demo._parse(argv))
    board = (out / "leaderboard.md").read_text()
    for name in demo.board_policies(out, budget):
        assert f"| {name} |" in board
    for name in ("leaderboard.csv", "leaderboard.png", "curves.png"):
        assert Image.open(out / name if name.endswith(".png") else out / "leaderboard.png").size[0] > 100
    assert (out / "leaderboard.csv").read_text().count("\n") == 1 + len(demo.board_policies(out, budget))
    record = json.loads((out / "demo_timings.json").read_text())
    assert record["budget"]["more_sft_steps"] == 2 and record["threads"]["threads"] == 1 and record["jobs"] == 2
    trained = [name for name, _ in demo.training_stages(out, budget, 0)]
    for name in trained:  # every training stage: wall, process CPU, and CPU without its curve evaluations
        row = record["stages"][name]
        assert row["wall_s"] > 0 and 0 <= row["train_cpu_s"] <= row["cpu_s"]
    assert len(trained) == 6 and len(record["stages"]) == 6 + 8 + 2  # + evaluations + leaderboard + curves
    rows = {r: plot.load_run(str(out / r))["rows"] for r in ("sft_start", "lavida_r1", "more_sft")}
    assert [r["step"] for r in rows["sft_start"]] == [0, 1, 2]  # stopped at 2 of the 4 scheduled steps
    assert all("eval/reward" in r for r in rows["sft_start"])  # held-out curve: evaluated every step
    assert rows["sft_start"][-1]["learning_rate"] == pytest.approx(2e-3 / 50)  # warm-up of the 4-step schedule
    assert [r["step"] for r in rows["lavida_r1"]] == [0, 1] and "reward" in rows["lavida_r1"][1]
    assert [r["step"] for r in rows["more_sft"]] == [0, 1, 2]
    assert (out / "sft_start" / "config.json").is_file() and (out / "ar_grpo" / "config.json").is_file()
    assert demo.main(argv) == 2 and "already holds a finished demo" in capsys.readouterr().out


def _metrics(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plot_cli_draws_every_panel_from_metrics_jsonl(tmp_path, capsys):
    rl = _metrics(tmp_path / "rl", [
        {"step": 0, "eval/reward": 0.25},
        {"step": 1, "reward": 0.5, "frac_reward_zero_std": 0.75, "frac_reward_zero_std/after_forcing": 0.5, "forced_frac": 0.125},
        {"step": 2, "reward": 0.625, "frac_reward_zero_std": 0.5, "forced_frac": 0.0, "eval/reward": 0.5},
    ])  # fmt: skip
    sft = _metrics(tmp_path / "sft", [{"step": 0, "eval/reward": 0.0}, {"step": 3, "loss": 1.0, "eval/reward": 0.375}])
    runs = [plot.load_run(str(rl)), plot.load_run(f"{sft}=continued SFT@10")]  # drawn from step 10 on
    held_out, train, zero_std, forced = plot.curves(runs)
    assert held_out == [("rl", [0, 2], [0.25, 0.5], "-"), ("continued SFT", [10, 13], [0.0, 0.375], "-")]
    assert train == [("rl", [1, 2], [0.5, 0.625], "-")]  # SFT steps log no reward
    assert zero_std == [("rl", [1, 2], [0.75, 0.5], "-"), ("rl", [1], [0.5], "--")]
    assert forced == [("rl", [1, 2], [0.125, 0.0], "-")]
    png = tmp_path / "figs" / "curves.png"
    assert cli.main(["plot", str(rl), f"{sft}=continued SFT@10", "--out", str(png)]) == 0
    assert Image.open(png).size == (1210, 825) and "wrote" in capsys.readouterr().out


def test_plot_names_a_missing_run_and_a_corrupt_line(tmp_path, capsys):
    assert plot.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"no {tmp_path / 'nope' / 'metrics.jsonl'}" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    assert plot.main([str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "line 2 is not valid JSON" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_ablation_table_writes_a_bar_chart_of_each_preset(tmp_path):
    for preset, after in (("demo", [0.5, 0.625]), ("d1", [0.25, 0.375])):
        for seed, value in enumerate(after):
            _metrics(tmp_path / preset / f"seed{seed}", [{"step": 0, "eval/reward": 0.25},
                                                         {"step": 1, "loss": 1.0, "time": 2.0, "eval/reward": value}])  # fmt: skip
    write_table(tmp_path, ["demo", "d1"], [0, 1])
    image = Image.open(tmp_path / "ablation.png")
    assert image.size[0] == 880 and image.size[1] > 100


def test_jobs_default_to_the_tracks_the_cores_hold():
    on_linux = sys.platform == "linux"
    assert demo.default_jobs(None, {"threads": 1, "cores": 2}) == (2 if on_linux else 1)
    assert demo.default_jobs(None, {"threads": 2, "cores": 2}) == 1
    assert demo.default_jobs(5, {"threads": 1, "cores": 1}) == (2 if on_linux else 1)  # at most one per track
    assert demo.default_jobs(1, {"threads": 1, "cores": 16}) == 1
    assert [i for track in demo.TRACKS for i in track] == list(range(len(demo.RUNS)))
    assert [demo.RUNS[i] for i in demo.TRACKS[1]] == ["ar_sft_start", "ar_grpo"]
