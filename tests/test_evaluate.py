"""lavida eval: batch-size independence, resume after a crash, results round trip, plug-in policies."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs
from evaluation.evaluate import main, parse_kwargs, parse_value
from evaluation.metrics import pass_at_k_table
from evaluation.results import (
    comparable,
    get_metric,
    read_results,
    read_rows,
    summarize_rows,
    write_json,
)

FIXTURES = Path(__file__).parent / "fixtures"

# A stochastic plug-in policy: per-episode seeds (act takes seeds=), random answers from
# each seed; crashes on purpose once LAVIDA_TEST_CRASH_AFTER act calls were made.
STOCHASTIC_POLICY = textwrap.dedent(
    """
    import os
    import numpy as np
    from baselines.simple import RandomPolicy

    class SeededPolicy:
        def __init__(self, spread=6):
            self.spread, self.calls = spread, 0
            self.grounding = RandomPolicy(seed=1)

        def act(self, observations, num_samples=1, seeds=None):
            self.calls += 1
            limit = int(os.environ.get("LAVIDA_TEST_CRASH_AFTER", "0"))
            if limit and self.calls > limit:
                raise RuntimeError("simulated crash")
            out = []
            for obs, seed in zip(observations, seeds):
                rng = np.random.default_rng(seed)
                if "bounding box" in obs["prompt"].lower():
                    out.append(self.grounding.act([obs], num_samples)[0])
                else:
                    out.append([f"<answer>{int(rng.integers(0, self.spread))}</answer>" for _ in range(num_samples)])
            return out

    def make(spread=6):
        return SeededPolicy(spread)
    """
)


def run(out: Path, *args: str) -> int:
    return main(["--out", str(out), "--no-progress", *args])


@pytest.fixture
def seeded_policy(tmp_path) -> str:
    path = tmp_path / "seeded_policy.py"
    path.write_text(STOCHASTIC_POLICY)
    return f"{path}:make"


def test_env_kwargs_parse_to_typed_values_and_nested_dicts():
    assert parse_kwargs(
        ['difficulty=3,image_size=64,scale=0.5,flag=TRUE,off=false,gone=None,name=abc,quoted="1"',
         'grounding.box_format=norm1000,tasks={"grounding": 1, "visual_math": 2}']
    ) == {
        "difficulty": 3, "image_size": 64, "scale": 0.5, "flag": True, "off": False, "gone": None, "name": "abc",
        "quoted": "1", "grounding": {"box_format": "norm1000"}, "tasks": {"grounding": 1, "visual_math": 2},
    }
    assert parse_value("1e-3") == 0.001 and parse_value("[1, 2]") == [1, 2]
    with pytest.raises(ValueError, match="key=value"):
        parse_kwargs("difficulty")
    with pytest.raises(ValueError, match="JSON"):
        parse_value("{oops")


@pytest.mark.parametrize("policy", ["random", "seeded"])
def test_results_do_not_depend_on_batch_size(tmp_path, policy, seeded_policy):
    spec = seeded_policy if policy == "seeded" else "random"
    common = ["--policy", spec, "--env", "LaViDa/MultiTask-v0", "--episodes", "12", "--samples", "3"]
    assert run(tmp_path / "b1", *common, "--batch-size", "1") == 0
    assert run(tmp_path / "b8", *common, "--batch-size", "8") == 0
    one, eight = read_results(tmp_path / "b1"), read_results(tmp_path / "b8")
    assert comparable(one) == comparable(eight)
    assert (one["run"]["batch_size"], eight["run"]["batch_size"]) == (1, 8)
    assert (tmp_path / "b1/samples.jsonl").read_bytes() == (tmp_path / "b8/samples.jsonl").read_bytes()
    # the seeded policy's samples really vary (so batch independence is not trivially true)
    rewards = [s["reward"] for r in read_rows(tmp_path / "b1/samples.jsonl") for s in r["samples"]]
    assert len(set(rewards)) > 1


def test_crashed_run_resumes_to_the_same_results(tmp_path, seeded_policy, monkeypatch):
    common = ["--policy", seeded_policy, "--env", "LaViDa/MultiTask-v0", "--episodes", "10", "--batch-size", "2",
              "--samples", "2", "--seed", "7"]
    assert run(tmp_path / "full", *common) == 0
    monkeypatch.setenv("LAVIDA_TEST_CRASH_AFTER", "2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crash", *common)
    partial = read_rows(tmp_path / "crash/samples.jsonl")
    assert [r["index"] for r in partial] == [0, 1, 2, 3]
    assert not (tmp_path / "crash/results.json").exists()
    with open(tmp_path / "crash/samples.jsonl", "a") as handle:  # a line cut off by the kill
        handle.write('{"index": 4, "samples": [{"act')
    monkeypatch.delenv("LAVIDA_TEST_CRASH_AFTER")
    assert run(tmp_path / "crash", *common) == 2  # without --resume the dir is refused
    assert run(tmp_path / "crash", *common, "--resume") == 0
    full, resumed = read_results(tmp_path / "full"), read_results(tmp_path / "crash")
    assert comparable(full) == comparable(resumed)
    assert resumed["run"]["episodes_resumed"] == 4
    assert (tmp_path / "full/samples.jsonl").read_bytes() == (tmp_path / "crash/samples.jsonl").read_bytes()


def test_resume_refuses_different_arguments(tmp_path, capsys):
    assert run(tmp_path / "r", "--policy", "constant", "--env", "LaViDa/Grounding-v0", "--episodes", "2") == 0
    code = run(tmp_path / "r", "--policy", "constant", "--env", "LaViDa/Grounding-v0", "--episodes", "3", "--resume")
    assert code == 2
    assert "episodes" in capsys.readouterr().err


def test_results_file_round_trip_and_fields(tmp_path):
    assert run(tmp_path / "g", "--policy", "oracle", "--env", "LaViDa/Grounding-v0", "--episodes", "5",
               "--env-kwargs", "difficulty=2,box_format=norm1000") == 0
    results = read_results(tmp_path / "g")
    write_json(tmp_path / "copy.json", results)
    assert read_results(tmp_path / "copy.json") == results
    assert results["env"] == {
        "id": "LaViDa/Grounding-v0", "kwargs": {"difficulty": 2, "box_format": "norm1000"}, "split": "test",
        "version": gym.make("LaViDa/Grounding-v0").unwrapped.env_version, "sub_versions": None,
        "nondeterministic": False, "num_problems": None,
    }
    assert results["n"] == 5 and results["episodes"]["indices"] == [0, 4]
    assert results["policy"]["class"] == "baselines.simple.OraclePolicy"
    assert set(results["provenance"]["versions"]) >= {"lavida-r1-gym", "torch", "transformers", "gymnasium",
                                                      "math-verify", "numpy"}
    for name in ("acc@0.5", "acc@0.75", "giou", "ciou", "iou"):
        assert get_metric(results, f"task_metrics.{name}")["mean"] == 1.0
    assert set(results["breakdowns"]["difficulty"]["reward"]) == {"2"}
    row = read_rows(tmp_path / "g/samples.jsonl")[0]
    assert set(row) >= {"index", "prompt", "difficulty", "task", "reward", "correct", "samples"}
    assert set(row["samples"][0]) >= {"action", "parsed", "reward", "reward_components", "correct", "metrics", "error"}
    bad = dict(results, schema_version=99)
    write_json(tmp_path / "bad.json", bad)
    with pytest.raises(ValueError, match="schema_version"):
        read_results(tmp_path / "bad.json")
    (tmp_path / "worse.json").write_text(json.dumps({"env": {}}))
    with pytest.raises(ValueError, match="missing field"):
        read_results(tmp_path / "worse.json")


def test_bad_line_in_the_middle_of_samples_is_an_error(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_rows(path)


def test_grounding_metrics_from_rows_match_hand_computed_boxes():
    def row(i, pred, gold):
        iou_sample = {"reward": 0.0, "correct": False, "metrics": {}, "reward_components": {}, "error": None,
                      "box": {"pred": pred, "gold": gold}}
        return {"index": i, "task": "grounding", "difficulty": 1, "reward": 0.0, "correct": 0.0, "num_correct": 0,
                "samples": [iou_sample]}

    rows = [row(0, [0, 0, 10, 10], [0, 0, 10, 10]),  # IoU 1
            row(1, [0, 0, 10, 10], [5, 0, 15, 10]),  # I 50, U 150: IoU 1/3
            row(2, None, [0, 0, 20, 10])]  # missed: I 0, U 200
    metrics = summarize_rows(rows, 1)["metrics"]["task_metrics"]
    assert metrics["acc@0.5"]["mean"] == pytest.approx(1 / 3)
    assert metrics["giou"]["mean"] == pytest.approx((1 + 1 / 3) / 3)
    assert metrics["ciou"]["mean"] == pytest.approx((100 + 50) / (100 + 150 + 200))
    lo, hi = metrics["ciou"]["ci95"]
    assert 0 <= lo <= metrics["ciou"]["mean"] <= hi <= 1


def test_pass_at_k_and_images_stored_as_hashes(tmp_path, seeded_policy):
    assert run(tmp_path / "k", "--policy", seeded_policy, "--env", "LaViDa/VisualMath-v0", "--episodes", "6",
               "--samples", "4", "--policy-kwargs", "spread=3") == 0
    results = read_results(tmp_path / "k")
    rows = read_rows(tmp_path / "k/samples.jsonl")
    assert results["pass_at_k"] == pass_at_k_table([r["num_correct"] for r in rows], 4)
    assert results["policy"]["kwargs"] == {"spread": 3}
    assert run(tmp_path / "e", "--policy", "random", "--env", "LaViDa/ImageEdit-v0", "--episodes", "2") == 0
    image = read_rows(tmp_path / "e/samples.jsonl")[0]["samples"][0]["action"]["image"]
    assert image["shape"] == [128, 128, 3] and image["dtype"] == "uint8" and len(image["blake2b"]) == 32
    assert (tmp_path / "e/samples.jsonl").stat().st_size < 20_000  # no pixels in the file


def test_module_factory_policy_from_a_temp_module(tmp_path, monkeypatch):
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "my_boxes.py").write_text(
        "def make(box='[10, 10, 60, 60]'):\n"
        "    return lambda obs: '<think>fixed</think><answer>' + box + '</answer>'\n"
    )
    monkeypatch.syspath_prepend(str(package))
    assert run(tmp_path / "m", "--policy", "my_boxes:make", "--env", "LaViDa/Grounding-v0", "--episodes", "4") == 0
    results = read_results(tmp_path / "m")
    env = gym.make("LaViDa/Grounding-v0", split="test")
    expected = []
    for i in range(4):
        env.reset(options={"index": i})
        expected.append(env.step("<think>fixed</think><answer>[10, 10, 60, 60]</answer>")[1])
    assert results["metrics"]["reward"]["mean"] == pytest.approx(np.mean(expected))
    assert results["policy"]["class"] == "agents.policy.CallablePolicy"
    sys.modules.pop("my_boxes", None)


@pytest.mark.parametrize("env_id", lavida_envs.ENV_IDS)
@pytest.mark.parametrize("policy", ["random", "constant", "oracle"])
def test_every_simple_baseline_runs_on_every_env(tmp_path, env_id, policy):
    assert run(tmp_path / "o", "--policy", policy, "--env", env_id, "--episodes", "4", "--batch-size", "3") == 0
    results = read_results(tmp_path / "o")
    assert results["n"] == 4 and len(read_rows(tmp_path / "o/samples.jsonl")) == 4
    reward = results["metrics"]["reward"]["mean"]
    assert reward == 1.0 if policy == "oracle" else 0.0 <= reward < 0.6
    assert results["errors"]["samples_with_error"] == 0 or policy != "oracle"


def test_dataset_env_evaluates_at_most_its_problems(tmp_path):
    kwargs = f"dataset=mathvista,data_dir={FIXTURES / 'mathvista'}"
    assert run(tmp_path / "d", "--policy", "oracle", "--env", "LaViDa/VisualMath-v0", "--episodes", "100",
               "--env-kwargs", kwargs) == 0
    results = read_results(tmp_path / "d")
    assert results["n"] == results["env"]["num_problems"] == 5
    assert results["metrics"]["correct"]["mean"] == 1.0
    assert run(tmp_path / "d2", "--policy", "oracle", "--env", "LaViDa/VisualMath-v0", "--start-index", "9",
               "--env-kwargs", kwargs) == 2


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    assert run(tmp_path / "x", "--policy", "no-such-policy", "--env", "LaViDa/Grounding-v0") == 2
    assert "unknown policy spec" in capsys.readouterr().err
    code = run(tmp_path / "y", "--policy", "random", "--env", "LaViDa/Grounding-v0", "--env-kwargs", "difficulty=9")
    assert code == 2
    assert "difficulty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / "z", "--policy", "random", "--env", "LaViDa/Grounding-v0", "--env-kwargs", "split=train")


def test_a_run_that_failed_to_start_does_not_block_the_rerun(tmp_path, capsys):
    common = ["--policy", "constant", "--env", "LaViDa/Grounding-v0", "--episodes", "2"]
    assert run(tmp_path / "f", *common, "--env-kwargs", "difficulty=9") == 2  # the env does not build
    assert not (tmp_path / "f" / "eval_config.json").exists()
    assert run(tmp_path / "f", *common) == 0
    (tmp_path / "g").mkdir()  # a config left by an older version, no episode run: not refused either
    write_json(tmp_path / "g" / "eval_config.json", {"stale": True})
    assert run(tmp_path / "g", *common) == 0
    assert "already holds an evaluation" not in capsys.readouterr().err


def test_overwrite_starts_over_and_the_corrupt_line_message_names_it(tmp_path, capsys):
    common = ["--policy", "constant", "--env", "LaViDa/Grounding-v0", "--episodes", "3"]
    assert run(tmp_path / "fresh", *common) == 0
    out = tmp_path / "o"
    assert run(out, *common) == 0
    assert run(out, *common) == 2
    assert "--overwrite to start over" in capsys.readouterr().err
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join([lines[0], '{"index": 1, "samp', lines[2]]) + "\n")
    assert run(out, *common, "--resume") == 2
    message = capsys.readouterr().err
    assert "line 2 is not valid JSON" in message and "--overwrite" in message and "without --resume" not in message
    with pytest.raises(SystemExit):  # one or the other
        run(out, *common, "--resume", "--overwrite")
    assert run(out, *common, "--overwrite") == 0  # what the message says works
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "fresh" / "samples.jsonl").read_bytes()
    assert run(out, *common, "--episodes", "2", "--overwrite") == 0  # other arguments: a new run
    assert read_results(out)["episodes"]["requested"] == 2


def test_single_process_accelerate_launch_is_warned(tmp_path, monkeypatch, capsys):
    from evaluation.runtime import single_process_launch_warning

    launched = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "--multi_gpu" in single_process_launch_warning(1, launched)
    assert single_process_launch_warning(1, {**launched, "WORLD_SIZE": "2"}) is None  # a real multi-process launch
    assert single_process_launch_warning(1, {"ACCELERATE_MIXED_PRECISION": "no"}) is None  # --num_processes 1
    assert single_process_launch_warning(1, {"MASTER_ADDR": "x"}) is None  # not accelerate
    for key, value in launched.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert run(tmp_path / "a", "--policy", "constant", "--env", "LaViDa/VisualMath-v0", "--episodes", "1") == 0
    assert "started only this one" in capsys.readouterr().err
    assert read_results(tmp_path / "a")["run"]["num_processes"] == 1


def test_threads_option_default_and_record(tmp_path, monkeypatch):
    import torch

    from evaluation.runtime import default_threads, resolve_threads

    assert [default_threads(c) for c in (1, 2, 3, 4, 8, 64)] == [1, 1, 1, 2, 4, 4]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(None) == (3, "OMP_NUM_THREADS") and resolve_threads(2) == (2, "--threads")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(None) == (default_threads(), "default")
    with pytest.raises(ValueError, match="--threads must be an int >= 1"):
        resolve_threads(0)
    try:
        common = ["--policy", "constant", "--env", "LaViDa/VisualMath-v0", "--episodes", "1"]
        assert run(tmp_path / "t", *common, "--threads", "2") == 0
        assert torch.get_num_threads() == 2
        recorded = read_results(tmp_path / "t")["run"]["threads"]
        assert recorded["threads"] == 2 and recorded["source"] == "--threads" and recorded["cores"] >= 1
    finally:
        torch.set_num_threads(1)


def test_bench_and_demo_take_threads(capsys, monkeypatch):
    import torch

    from evaluation import demo, throughput

    assert throughput._pop_threads(["rollout", "--threads", "2", "--episodes", "1"]) == (2, ["rollout", "--episodes", "1"])
    assert throughput._pop_threads(["--threads=3", "envs"]) == (3, ["envs"])
    with pytest.raises(ValueError, match="--threads needs an integer >= 1"):
        throughput._pop_threads(["envs", "--threads", "0"])
    calls = []
    monkeypatch.setattr(throughput, "TARGETS", {"rollout": ("json", "x"), "envs": ("json", "y")})
    monkeypatch.setattr("json.main", lambda argv: calls.append(argv) or 0, raising=False)
    try:
        assert throughput.main(["rollout", "--threads", "2", "--episodes", "1"]) == 0
        assert torch.get_num_threads() == 2 and "torch CPU threads: 2 (--threads" in capsys.readouterr().out
        assert throughput.main(["--threads", "2", "envs"]) == 0
        assert calls == [["--episodes", "1", "--threads", "2"], []]  # forwarded only to benches with their own flag
    finally:
        torch.set_num_threads(1)
    assert demo._parse(["--threads", "1"]).threads == 1 and demo._parse([]).threads is None


def test_lavida_train_gets_the_thread_default_unless_it_passes_threads(monkeypatch):
    import evaluation.runtime as runtime
    from evaluation import cli

    calls = []
    monkeypatch.setattr(runtime, "apply_threads", lambda requested=None: calls.append(requested))
    monkeypatch.setitem(cli.COMMANDS, "train", ("json", "stand-in"))  # dispatch only, no trainer run
    monkeypatch.setattr("json.main", lambda argv: 0, raising=False)
    assert cli.main(["train", "--config", "x.yaml"]) == 0 and calls == [None]
    assert cli.main(["train", "--threads", "3"]) == 0 and cli.main(["train", "--threads=3"]) == 0
    assert calls == [None]  # the trainer's own --threads decides


@pytest.mark.parametrize("spec", ["hf:/nonexistent/model", "hf-vlm:/nonexistent/model", "hf-dllm:/nonexistent/model"])
def test_a_missing_hf_folder_is_a_one_line_usage_error(tmp_path, capsys, spec):
    from evaluation.evaluate import main as evaluate_main

    assert evaluate_main(["--policy", spec, "--env", "LaViDa/VisualMath-v0", "--episodes", "1",
                          "--out", str(tmp_path / "out"), "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("lavida eval:") and "/nonexistent/model" in err and "Traceback" not in err
