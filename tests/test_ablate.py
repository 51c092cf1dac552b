"""lavida ablate: presets x seeds from one SFT start, table of means with t-intervals."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from scipy import stats

from evaluation import ablate
from evaluation.ablation_table import diff_ci, mean_ci, run_numbers

sys.path.insert(0, os.path.dirname(__file__))
from trainer_tiny import tiny_policy  # noqa: E402

TINY_RUN = [
    "image_size=32", "steps=4", "prompts_per_step=1", "sft_per_step=2", "num_generations=2",
    'task_decoding={"visual_math": {"gen_length": 16}, "grounding": {"gen_length": 16}, "image_edit": {"gen_length": 8}}',
]  # fmt: skip


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["half"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert mean_ci([float("nan"), 5.0])["n"] == 1 and mean_ci([])["mean"] is None


def test_diff_ci_is_welch():
    d = diff_ci([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    se = math.sqrt(1 / 3 + (1 / 3) / 3)
    dof = se**4 / ((1 / 3) ** 2 / 2 + (1 / 9) ** 2 / 2)
    assert d["diff"] == pytest.approx(5 / 3)
    assert d["hi"] - d["diff"] == pytest.approx(stats.t.ppf(0.975, dof) * se)
    assert diff_ci([1.0], [2.0, 3.0])["diff"] is None and diff_ci([1.0, 1.0], [0.0, 0.0])["lo"] == 1.0


def test_run_numbers_reads_before_after_and_step_means(tmp_path):
    rows = [
        {"step": 0, "eval/reward": 0.2, "eval/reward/visual_math": 0.2},
        {"step": 1, "loss": 1.0, "reward": 0.1, "frac_reward_zero_std": 1.0, "grad_norm": 2.0, "time": 3.0},
        {"step": 2, "loss": 0.5, "reward": 0.3, "frac_reward_zero_std": 0.5, "grad_norm": 4.0, "skipped": 1.0,
         "collapse_alarm": 1.0, "time": 7.0, "cpu_time": 6.5, "eval/reward": 0.5, "eval/reward/visual_math": 0.5},
    ]  # fmt: skip
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows))
    n = run_numbers(log)
    assert n["before/eval/reward"] == 0.2 and n["after/eval/reward/visual_math"] == 0.5
    assert n["delta/eval/reward"] == pytest.approx(0.3) and n["reward"] == pytest.approx(0.2)
    assert n["frac_reward_zero_std"] == 0.75 and n["max_grad_norm"] == 4.0
    assert (n["skipped"], n["collapse_alarm"], n["time"], n["cpu_time"]) == (1.0, 1.0, 7.0, 6.5)


def test_ablate_runs_every_preset_and_seed_from_one_start_and_resumes(tmp_path, capsys):
    init = tmp_path / "init"
    tiny_policy().save_pretrained(init)
    out = tmp_path / "sweep"
    argv = ["--presets", "demo", "ablate_no_forcing", "--seeds", "0", "1", "--init-from", str(init), "--rl-steps", "1",
            "--eval-episodes", "2", "--jobs", "2", "--out", str(out), "--set", *TINY_RUN]  # fmt: skip
    assert ablate.main(argv) == 0, capsys.readouterr()
    table = json.loads((out / "ablation.json").read_text())["table"]
    assert set(table) == {"demo", "ablate_no_forcing"}
    for row in table.values():
        assert row["runs"]["n"] == 2 and row["after/eval/reward"]["n"] == 2
        assert row["before/eval/reward"]["half"] == pytest.approx(0.0)  # same start, greedy evaluation
    assert table["ablate_no_forcing"]["forced_frac"]["mean"] == 0.0
    assert "| demo |" in (out / "ablation.md").read_text() and (out / "ablation.csv").is_file()
    claims = (out / "claims.md").read_text()
    assert "| Answer forcing cuts zero-variance groups | frac_reward_zero_std/after_forcing | demo:" in claims
    # a claim whose presets did not run gets a verdict row saying so, and no metric rows
    assert "| SFT rows instead of KL keep RL stable | GRPO+KL diverges" in claims
    assert "(demo or ablate_kl not run) | not measurable here |" in claims
    assert "| SFT rows instead of KL keep RL stable | after/eval/reward | demo:" not in claims
    capsys.readouterr()
    assert ablate.main(argv) == 0 and "0 runs to do" in capsys.readouterr().out  # finished runs are kept
    assert ablate.main([*argv, "--table-only"]) == 0 and "runs to do" not in capsys.readouterr().out


def test_ablate_names_an_unknown_preset_and_a_malformed_override(tmp_path, capsys):
    for argv, message in ((["--presets", "ablate_nope"], "ablate_nope"),
                          (["--set", "image_size"], "--set 'image_size': expected FIELD=VALUE")):  # fmt: skip
        with pytest.raises(SystemExit) as info:  # a usage error, before anything runs
            ablate.main([*argv, "--out", str(tmp_path)])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "sft").exists()  # nothing was trained


def test_verdict_follows_the_sign_the_paper_predicts():
    from evaluation.ablation_table import verdict

    assert verdict({"diff": 0.2, "lo": 0.1, "hi": 0.3}, +1) == "reproduced"
    assert verdict({"diff": -0.2, "lo": -0.3, "hi": -0.1}, -1) == "reproduced"
    assert verdict({"diff": -0.2, "lo": -0.3, "hi": -0.1}, +1) == "contradicted"
    assert verdict({"diff": 0.0, "lo": -0.1, "hi": 0.1}, +1) == "inconclusive (CI includes 0)"
    assert verdict({"diff": None, "lo": None, "hi": None}, +1) == "not measurable here"


def test_an_sft_preset_keeps_its_steps_and_cpu_budget_and_a_preset_its_own_start(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the presets' init_from runs/tb_teacher_sft is relative to the working directory
    with pytest.raises(SystemExit) as info:  # a usage error, before anything runs
        ablate.main(["--presets", "testbed_teacher", "--init-from", str(tmp_path), "--out", "o"])
    assert info.value.code == 2
    assert "preset testbed_teacher: its init_from runs/tb_teacher_sft has no config.json" in capsys.readouterr().err
    (tmp_path / "runs" / "tb_teacher_sft").mkdir(parents=True)
    (tmp_path / "runs" / "tb_teacher_sft" / "config.json").write_text("{}")
    rl = ablate.run_overrides("demo", "START", 30)
    assert rl == {"phase": "rl", "sft_steps": 0, "init_from": "START", "max_steps": 30}
    teacher = ablate.run_overrides("testbed_teacher", "START", 30)
    assert teacher["init_from"] == "runs/tb_teacher_sft" and teacher["max_steps"] == 30
    sft = ablate.run_overrides("testbed_teacher_sft", "START", 30)
    assert sft == {"init_from": "runs/tb_teacher_sft"}  # phase sft, max_steps and max_cpu_minutes from the preset
    cmd = ablate.train_command("testbed_teacher_sft", Path("o"), sft)
    assert "--max_steps" not in cmd and "--phase" not in cmd


def test_merge_takes_an_earlier_sweeps_runs_for_presets_not_run_here(tmp_path, capsys):
    earlier = {"demo": [{"after/eval/reward": v} for v in (0.5, 0.6, 0.7)],
               "ablate_kl": [{"after/eval/reward": v} for v in (0.4, 0.5, 0.45)]}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps({"seeds": [0, 1, 2], "runs": earlier}))
    out = tmp_path / "sweep"
    out.mkdir()
    argv = ["--table-only", "--presets", "demo", "ablate_kl", "--out", str(out), "--merge", str(tmp_path / "old.json")]
    assert ablate.main(argv) == 0
    claims = (out / "claims.md").read_text()
    assert "| SFT rows instead of KL keep RL stable | after/eval/reward | demo: 0.600 ± 0.248 | ablate_kl: 0.450" in claims
    assert "Runs of an earlier sweep (--merge): demo, ablate_kl." in (out / "ablation.md").read_text()
    (tmp_path / "bad.json").write_text(json.dumps({"table": {}}))
    assert ablate.main([*argv[:-1], str(tmp_path / "bad.json")]) == 2
    assert "not an ablation.json with a 'runs' object" in capsys.readouterr().err


def test_a_claim_takes_its_testbed_pair_where_its_own_pair_has_no_runs(tmp_path):
    from evaluation.ablation_table import write_claims

    runs = lambda *values: [{"after/eval/reward/image_edit": v, "reward": v} for v in values]  # noqa: E731
    claims = write_claims(tmp_path / "c.md", {"testbed_edit": runs(0.5, 0.6, 0.7),
                                              "testbed_edit_no_tree": runs(0.1, 0.2, 0.15)}).read_text()  # fmt: skip
    assert "| Tree search helps editing at equal model calls | ImgEdit 3.90 with tree search vs 3.84-3.85 without | " \
           "after/eval/reward/image_edit | +0.450 [" in claims and "] | reproduced |" in claims
    assert "| after/eval/reward/image_edit | testbed_edit: 0.600 ± 0.248 | testbed_edit_no_tree: 0.150 ±" in claims
    assert ("– (demo or ablate_single_task_visual_math, or testbed_mix or testbed_mix_visual_math not run) "
            "| not measurable here |") in claims  # neither pair of that claim ran: both named
    both = write_claims(tmp_path / "d.md", {"testbed_edit": runs(0.5, 0.6, 0.7), "testbed_edit_no_tree": runs(0.1, 0.2, 0.15),
                                            "ablate_single_task_image_edit": runs(0.1, 0.1, 0.2),
                                            "ablate_single_task_image_edit_no_tree": runs(0.3, 0.4, 0.35)}).read_text()
    assert "ablate_single_task_image_edit: 0.133" in both and "testbed_edit: " not in both  # its own pair first
