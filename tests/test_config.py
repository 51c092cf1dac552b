"""agents.config: TrainConfig defaults (paper + TRL), CLI/YAML parsing, base chains, presets, validation errors."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from agents.config import TrainConfig, build_parser, load_config, parse_config
from agents.rollout import ForcingConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
HINTS = typing.get_type_hints(TrainConfig)
LIST_FIELDS = sorted(f.name for f in dataclasses.fields(TrainConfig) if typing.get_origin(HINTS[f.name]) is list)
EMPTY_SPELLINGS = ["[]", "none", ""]
ABLATIONS = {
    "ablate_kl": {"regularizer": "kl", "beta": 0.04},
    "ablate_grpo_only": {"regularizer": "none"},
    "ablate_no_forcing": {"answer_forcing": False},
    "ablate_forcing_always": {"forcing_prob": 1.0},
    "ablate_no_tree": {"tree_search": []},
    "ablate_gamma0": {"gamma": 0.0},
    "ablate_random_mask": {"likelihood": "random_mask"},
    "ablate_mean_field": {"likelihood": "mean_field"},
    "ablate_single_task_visual_math": {"tasks": {"visual_math": 1.0}},
    "ablate_single_task_grounding": {"tasks": {"grounding": 1.0}},
    "ablate_single_task_image_edit": {"tasks": {"image_edit": 1.0}},
    "ablate_single_task_image_edit_no_tree": {"tasks": {"image_edit": 1.0}, "tree_search": [], "num_generations": 8},
}


def test_every_field_has_a_default_and_help():
    for f in dataclasses.fields(TrainConfig):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        assert f.metadata.get("help"), f.name


def test_defaults_follow_the_paper_and_trl():
    c = TrainConfig().validate()
    assert (c.gamma, c.sft_weight, c.regularizer, c.likelihood) == (0.5, 1.0, "sft", "complementary")
    assert (c.answer_forcing, c.forcing_threshold, c.forcing_prob, c.forced_tokens_in_loss) == (True, 0.5, 0.1, False)
    assert c.tree_search == ["image_edit"] and c.tree_branch_steps == [0, 8] and "image_edit" not in c.forcing_tasks
    # the names TRL's GRPOConfig shares, with its defaults
    assert (c.num_generations, c.beta, c.epsilon, c.epsilon_high, c.scale_rewards) == (8, 0.0, 0.2, None, "group")
    assert c.uses_tree_search("image_edit") and not c.uses_tree_search("grounding")
    forcing = ForcingConfig.from_config(c)  # what the rollouts use
    assert forcing.suffix("visual_math", "42") == "<answer>42</answer>" and forcing.suffix("image_edit", "42") is None


def test_cli_parses_every_kind_of_field():
    c = parse_config([
        "--tasks", "visual_math:2,grounding:1", "--tree_branch_steps", "0", "4", "8", "--tree_search", "image_edit",
        "--threshold", "0.9", "--answer_forcing", "false", "--scale_rewards", "false", "--loss_type", "dr_grpo",
        "--task_decoding", '{"visual_math": {"steps": 32, "temperature": 0.5}}', "--learning_rate", "3e-5",
    ])  # fmt: skip
    assert dict(c.tasks) == {"visual_math": 2.0, "grounding": 1.0}
    assert c.task_weights == pytest.approx({"visual_math": 2 / 3, "grounding": 1 / 3})
    assert c.tree_branch_steps == [0, 4, 8] and c.threshold == 0.9 and c.answer_forcing is False
    assert (c.scale_rewards, c.loss_type, c.learning_rate) == ("none", "dr_grpo", 3e-5)
    d = c.decoding_for("visual_math")
    assert (d["steps"], d["temperature"], d["gen_length"], d["threshold"]) == (32, 0.5, 64, 0.9)


def test_yaml_sets_defaults_and_cli_overrides_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("gamma: 0.25\nscale_rewards: true\ntasks: {grounding: 1}\nnum_generations: 6\n")
    c = parse_config(["--config", str(path), "--num_generations", "3"])
    assert (c.gamma, c.scale_rewards, dict(c.tasks), c.num_generations) == (0.25, "group", {"grounding": 1.0}, 3)
    assert load_config(str(path), gamma=1.0).gamma == 1.0


def test_base_chain_merges_and_loops_are_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("gamma: 0.1\nseed: 7\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ngamma: 0.2\n")
    c = load_config(str(tmp_path / "b.yaml"))
    assert (c.gamma, c.seed) == (0.2, 7)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        load_config(str(tmp_path / "c.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_yaml_parses_and_validates(path):
    c = load_config(str(path))
    assert c.output_dir.endswith(path.stem)
    assert parse_config(["--config", str(path)]).to_dict() == c.to_dict()


@pytest.mark.parametrize("name, change", sorted(ABLATIONS.items()))
def test_each_ablation_is_the_demo_plus_exactly_its_change(name, change):
    demo = load_config(str(CONFIGS[0].parent / "demo.yaml")).to_dict()
    ablation = load_config(str(CONFIGS[0].parent / f"{name}.yaml")).to_dict()
    differs = {k for k in demo if demo[k] != ablation[k]}
    assert differs == set(change) | {"output_dir"}
    for key, value in change.items():
        assert ablation[key] == value


def test_the_issue_lists_every_preset():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "paper_scale", *ABLATIONS} <= names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gamma", "1.5"], r"TrainConfig.gamma=1.5: must be in \[0, 1\]"),
        (["--regularizer", "kl"], r"TrainConfig.beta=0.0: regularizer 'kl' needs beta > 0"),
        (["--tasks", "visual_math:1,chess:1"], r"TrainConfig.tasks=.*unknown task\(s\) \['chess'\]"),
        (["--tasks", "visual_math:0"], r"TrainConfig.tasks=.*at least one > 0"),
        (["--forcing_tasks", "image_edit"], r"TrainConfig.forcing_tasks=\['image_edit'\]: image_edit has no gold"),
        (["--tree_branch_steps", "4", "8"], r"TrainConfig.tree_branch_steps=\[4, 8\]: the first round"),
        (["--tree_branch_steps", "0", "64"], r"every branch step must be < steps \(64\)"),
        (["--forcing_prob", "2"], r"TrainConfig.forcing_prob=2.0: must be in \[0, 1\]"),
        (["--num_generations", "0"], r"TrainConfig.num_generations=0: must be an int >= 1"),
        (["--scale_rewards", "token"], r"TrainConfig.scale_rewards='token': choose one of"),
        (["--task_decoding", '{"grounding": {"gen_len": 8}}'], r"task_decoding.grounding=.*unknown setting\(s\) \['gen_len'\]"),
        (["--task_decoding", '{"grounding": {"steps": 0}}'], r"task_decoding.grounding.steps=0: must be an int >= 1"),
        (["--task_decoding", '{"image_edit": {"temperature": -1}}'], r"task_decoding.image_edit.temperature=-1: must be a number >= 0"),
        (["--difficulty", "9"], r"TrainConfig.difficulty='9'"),
        (["--forcing_template", "<answer>x</answer>"], r"must contain '\{answer\}'"),
    ],
)
def test_bad_values_name_the_field_the_value_and_the_fix(args, message):
    with pytest.raises(ValueError, match=message):
        parse_config(args)


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gamma: 0.5\nlearning_rat: 1e-4\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown field\(s\) \['learning_rat'\]"):
        load_config(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="bad.yaml: a config must be a YAML mapping"):
        load_config(str(bad))
    bad.write_text("gamma: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: TrainConfig.gamma=3"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))


def test_sft_difficulty_picks_the_level_of_the_sft_rows_only():
    c = TrainConfig(difficulty="2", sft_difficulty=1).validate()
    assert (c.difficulty, c.sft_difficulty) == ("2", "1")
    assert TrainConfig().sft_difficulty is None
    with pytest.raises(ValueError, match="sft_difficulty"):
        TrainConfig(sft_difficulty="7").validate()


def test_the_list_fields_are_found():
    assert {"tree_search", "forcing_tasks", "tree_branch_steps", "lora_target_modules"} <= set(LIST_FIELDS)


@pytest.mark.parametrize("name", LIST_FIELDS)
@pytest.mark.parametrize("spelling", EMPTY_SPELLINGS + [None])  # None: the bare flag
def test_every_list_field_can_be_emptied_from_the_command_line(name, spelling):
    assert getattr(TrainConfig(), name), f"{name}: a default that is already empty tests nothing"
    flag = [f"--{name}"] + ([] if spelling is None else [spelling])
    (config,) = build_parser().parse_args_into_dataclasses(flag)[:1]
    assert getattr(config, name) == []
    dashed = [f"--{name.replace('_', '-')}"] + ([] if spelling is None else [spelling])
    assert getattr(build_parser().parse_args_into_dataclasses(dashed)[0], name) == []


@pytest.mark.parametrize("spelling", EMPTY_SPELLINGS)
def test_all_list_fields_emptied_at_once_validate(spelling, tmp_path):
    c = parse_config([part for name in LIST_FIELDS for part in (f"--{name}", spelling)])
    assert all(getattr(c, name) == [] for name in LIST_FIELDS) and not c.uses_tree_search("image_edit")
    path = tmp_path / "empty.yaml"
    yaml_value = spelling or "''"
    path.write_text("".join(f"{name}: {yaml_value}\n" for name in LIST_FIELDS))
    assert all(getattr(load_config(str(path)), name) == [] for name in LIST_FIELDS)


def test_list_fields_read_commas_brackets_and_name_bad_items():
    c = parse_config(["--tree_branch_steps", "[0, 4]", "--forcing_tasks", "visual_math,grounding",
                      "--lora_target_modules", "q_proj,v_proj"])  # fmt: skip
    assert (c.tree_branch_steps, c.forcing_tasks, c.lora_target_modules) == ([0, 4], ["visual_math", "grounding"], ["q_proj", "v_proj"])
    assert TrainConfig(lora_target_modules="all-linear").lora_target_modules == ["all-linear"]  # YAML's string form
    with pytest.raises(ValueError, match=r"TrainConfig.tree_branch_steps=\['0', 'x'\]: cannot read 'x': write ints"):
        parse_config(["--tree_branch_steps", "0", "x"])
    with pytest.raises(ValueError, match=r"TrainConfig.tree_search=\['\[\]x'\]: unknown task"):
        parse_config(["--tree_search", "[]x"])
