"""Real-benchmark visual-math loaders: Geometry3K, MathVista, MathVerse from tiny fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lavida_envs.base import CHARSET, MAX_PROMPT_CHARS
from lavida_envs.datasets import MATH_LOADERS, DatasetError, letterbox, load_math_dataset, transliterate
from lavida_envs.datasets.common import ANSWER_INSTRUCTION, UNKNOWN_MARK, build_prompt
from lavida_envs.datasets.mathverse import split_options

FIXTURES = Path(__file__).parent / "fixtures"
SIZE = 64


def load(name: str, split: str = "test", data_dir: Path | None = None, size: int = SIZE):
    return load_math_dataset(name, str(data_dir or FIXTURES / name), split, size)


def by_id(problems):
    return {p.meta["original_id"]: p for p in problems}


def fixture_copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data), encoding="utf-8")


# ----- loading the fixtures ---------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "split", "ids"),
    [
        ("geometry3k", "train", ["0", "1", "2"]),  # val/2 is merged into train
        ("geometry3k", "test", ["5", "6"]),
        ("mathvista", "test", ["1", "2", "3", "7", "8"]),
        ("mathverse", "test", ["1", "5", "9", "12"]),
    ],
)
def test_fixture_loads_every_problem_with_valid_fields(name, split, ids):
    problems = load(name, split)
    assert [p.meta["original_id"] for p in problems] == ids
    for p in problems:
        assert p.image.dtype == np.uint8 and p.image.shape == (SIZE, SIZE, 3)
        assert set(p.prompt) <= set(CHARSET) and 0 < len(p.prompt) <= MAX_PROMPT_CHARS
        assert p.prompt.endswith(ANSWER_INSTRUCTION)
        assert p.solution.startswith("<think>") and p.solution.endswith(f"</think><answer>{p.answer}</answer>")
        assert 1 <= p.difficulty <= 5
        assert p.key == f"{name}:{p.meta['original_id']}"
        assert p.source.startswith(f"{name}:")
        assert p.meta["question_type"] in ("multi_choice", "free_form")
        assert Path(p.meta["image_path"]).is_file()
    assert len({p.key for p in problems}) == len(problems)


def test_geometry3k_sources_rationale_and_fixed_difficulty():
    train = by_id(load("geometry3k", "train"))
    assert [train[i].source for i in "012"] == ["geometry3k:train", "geometry3k:train", "geometry3k:val"]
    assert train["0"].solution == "<think>By the Pythagorean theorem x = 5.</think><answer>C</answer>"
    assert train["1"].solution == "<think>Read the figure and compute.</think><answer>D</answer>"  # blank rationale
    assert {p.difficulty for p in train.values()} == {3}
    assert train["1"].meta["problem_type_graph"] == ["Circle"]


def test_multiple_choice_golds_are_letters_with_choices_listed_in_prompt():
    mv = by_id(load("mathvista"))
    assert mv["3"].answer == "C" and mv["3"].meta["choices"] == ["135°", "140°", "145°", "150°"]
    assert mv["7"].answer == "B" and mv["7"].meta["original_answer"] == "quarter"
    assert "\nA. half\nB. quarter\nC. o'clock\nD. quarter to\nE. quarter past\n" in mv["7"].prompt
    g3k = by_id(load("geometry3k", "test"))
    assert g3k["6"].answer == "A" and "A. 2 \\sqrt { 3 }" in g3k["6"].prompt
    verse = by_id(load("mathverse"))
    assert verse["1"].answer == "D" and verse["1"].meta["choices"] == ["40°", "60°", "120°", "140°"]
    for problems in (mv, g3k, verse):
        for p in problems.values():
            if p.meta["question_type"] == "multi_choice":
                assert len(p.answer) == 1 and p.answer in "ABCDEFGH" and p.meta["answer_type"] == "choice"
                assert not p.meta["choices"] or ord(p.answer) - 65 < len(p.meta["choices"])
            else:
                assert p.meta["choices"] is None and p.meta["answer_type"] in ("math", "text")


def test_mathvista_prompt_follows_answer_type_hints_and_unit():
    mv = by_id(load("mathvista"))
    assert "Answer with a floating-point number with 1 decimal place." in mv["1"].prompt
    assert "\r" not in mv["1"].prompt
    assert "(Unit: g)" in mv["2"].prompt and "Answer with an integer" in mv["2"].prompt
    assert mv["8"].answer == "[2, 5]" and "Answer with a list" in mv["8"].prompt
    assert [mv[i].difficulty for i in ("8", "7", "2", "3", "1")] == [1, 2, 3, 4, 5]  # grade mapping
    assert mv["1"].meta["precision"] == 1 and mv["1"].meta["dataset_answer_type"] == "float"
    assert mv["1"].meta["answer_type"] == "math" and mv["8"].meta["dataset_answer_type"] == "list"
    assert mv["1"].source == "mathvista:testmini"


def test_mathvista_chinese_question_is_transliterated_into_charset():
    p = by_id(load("mathvista"))["3"]
    assert p.prompt.startswith(f"△ABC{UNKNOWN_MARK}OB, OC{UNKNOWN_MARK}O, {UNKNOWN_MARK}∠A=110°")
    assert p.meta["untransliterated_chars"] > 0


def test_mathverse_versions_options_and_vision_only_fallback():
    verse = by_id(load("mathverse"))
    assert "Choices:\nA:40°" not in verse["1"].prompt and "\nA. 40°\nB. 60°\n" in verse["1"].prompt
    vision_only = verse["5"]
    assert vision_only.answer == "D" and vision_only.meta["choices"] == []
    assert vision_only.prompt.startswith("Answer the question shown in the figure.")
    assert "angle A = 80.0" not in vision_only.prompt  # question_for_eval is never shown
    assert verse["9"].answer == "6" and verse["9"].meta["dataset_answer_type"] == "expression"
    assert verse["12"].meta["choices"] == ["5 cm", "5 m"] and verse["12"].answer == "A"
    assert [verse[i].difficulty for i in ("1", "9", "12", "5")] == [1, 2, 3, 5]


@pytest.mark.parametrize(
    ("text", "body", "options"),
    [
        ("Find x.\nChoices:\nA:40°\nB:60°\nC:120°", "Find x.", ["40°", "60°", "120°"]),
        ("Which?\nChoice:\nA.5 cm\nB.5 m\n", "Which?", ["5 cm", "5 m"]),
        ("Pick one\n(A) x + 1\n(B) 2x", "Pick one", ["x + 1", "2x"]),
        ("No options here.", "No options here.", []),
        ("Odd\nA: 1\nC: 2", "Odd\nA: 1\nC: 2", []),  # letters must run A, B, C, ...
        ("Only one\nA: 1", "Only one\nA: 1", []),
    ],
)
def test_split_options_cuts_a_trailing_option_block(text, body, options):
    assert split_options(text) == (body, options)


def test_evaluation_sets_have_no_train_split():
    assert load("mathvista", "train") == [] and load("mathverse", "train") == []


def test_mathvista_jsonl_and_list_exports_load_like_the_release_dict(tmp_path):
    root = fixture_copy(tmp_path, "mathvista")
    records = list(json.loads((root / "testmini.json").read_text()).values())
    (root / "testmini.json").unlink()
    (root / "testmini.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    as_list = root / "export.json"
    as_list.write_text(json.dumps(records))
    reference = [(p.key, p.prompt, p.answer) for p in load("mathvista")]
    assert [(p.key, p.prompt, p.answer) for p in load("mathvista", data_dir=root)] == reference
    assert [(p.key, p.prompt, p.answer) for p in load("mathvista", data_dir=as_list)] == reference


def test_release_layout_with_data_subfolder_is_found(tmp_path):
    root = tmp_path / "MathVista"
    shutil.copytree(FIXTURES / "mathvista", root / "data")
    assert [p.key for p in load("mathvista", data_dir=root)] == [p.key for p in load("mathvista")]


def test_loading_is_deterministic():
    a, b = load("mathverse"), load("mathverse")
    assert all(x.prompt == y.prompt and np.array_equal(x.image, y.image) for x, y in zip(a, b))


# ----- images and text ----------------------------------------------------------------
def test_letterbox_keeps_aspect_pads_white_and_maps_boxes(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path)
    image, lb = letterbox(path, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert lb.scale == pytest.approx(0.8) and (lb.pad_x, lb.pad_y) == (0.0, 8.0) and lb.orig_size == (40, 20)
    assert (image[:8] == 255).all() and (image[24:] == 255).all()
    assert (image[8:24] == [255, 0, 0]).all()
    assert lb.box_to_image((0, 0, 40, 20)) == pytest.approx((0, 8, 32, 24))
    assert lb.box_to_original(lb.box_to_image((5, 3, 17, 11))) == pytest.approx((5, 3, 17, 11))


def test_letterbox_of_reduced_jpeg_decode_reports_original_geometry(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (400, 200), (0, 0, 255)).save(path, quality=95)
    image, lb = letterbox(path, 16)  # JPEG draft decodes at 1/8 scale first
    assert lb.orig_size == (400, 200) and lb.scale == pytest.approx(0.04) and lb.pad_y == 4.0
    assert (image[:4] == 255).all() and np.abs(image[6:10].astype(int) - [0, 0, 255]).max() < 8


def test_letterbox_composites_transparency_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    image, _ = letterbox(path, 16)
    assert (image == 255).all()


def test_fixture_images_are_letterboxed_not_stretched():
    p = by_id(load("geometry3k", "train"))["0"]  # 48 x 30 -> content 64 x 40 at y = 12
    assert (p.image[:11] == 255).all() and (p.image[53:] == 255).all()
    assert (p.image[13:51] != 255).any()


def test_transliterate_maps_math_symbols_and_marks_the_rest():
    text, unknown = transliterate("α±β≌x²y⁴（a）“q”—⊙O\r\n平行")
    assert text == "\\alpha \\pm \\beta \\cong x²y^4(a)\"q\"-\\odot O\n" + UNKNOWN_MARK
    assert unknown == 2
    assert set(text) <= set(CHARSET)


def test_overlong_question_is_cut_but_options_and_instruction_survive():
    prompt = build_prompt("x" * 5000, ["1", "2"], "Answer with the letter of the correct option.")
    assert len(prompt) == MAX_PROMPT_CHARS
    assert "x ...\nChoices:\nA. 1\nB. 2\n" in prompt and prompt.endswith(ANSWER_INSTRUCTION)


# ----- bad input ------------------------------------------------------------------------
def test_unknown_name_lists_known_loaders():
    with pytest.raises(ValueError, match="geometry3k.*mathverse.*mathvista"):
        load_math_dataset("mathvision", str(FIXTURES), "test", SIZE)
    assert sorted(MATH_LOADERS) == ["geometry3k", "mathverse", "mathvista"]


def test_missing_data_dir_says_to_pass_it(tmp_path):
    with pytest.raises(ValueError, match="pass data_dir="):
        load_math_dataset("mathvista", None, "test", SIZE)
    with pytest.raises(DatasetError, match="does not exist"):
        load_math_dataset("mathvista", str(tmp_path / "nope"), "test", SIZE)
    with pytest.raises(DatasetError, match=r"testmini\.json"):
        load_math_dataset("mathverse", str(tmp_path), "test", SIZE)


def _g3k_data(root: Path) -> Path:
    return root / "test" / "5" / "data.json"


def _mv_data(root: Path) -> Path:
    return root / "testmini.json"


def _set(rec_key, field, value):
    """Edit ``field`` of one record (dict keyed by pid, or list index) to ``value`` (None: delete)."""
    def fn(data):
        rec = data if rec_key is None else data[rec_key]
        if value is None:
            del rec[field]
        else:
            rec[field] = value
    return fn


BROKEN = [
    # (dataset, file to edit, edit, field named in the error, file named in the error)
    ("geometry3k", _g3k_data, _set(None, "answer", None), "answer", _g3k_data),
    ("geometry3k", _g3k_data, _set(None, "answer", "E"), "answer", _g3k_data),
    ("geometry3k", _g3k_data, _set(None, "choices", "97, 102"), "choices", _g3k_data),
    ("geometry3k", _g3k_data, _set(None, "problem_text", 7), "problem_text", _g3k_data),
    ("mathvista", _mv_data, _set("3", "question", None), "question", _mv_data),
    ("mathvista", _mv_data, _set("3", "answer", ["145°"]), "answer", _mv_data),
    ("mathvista", _mv_data, _set("3", "answer", "155°"), "answer", _mv_data),
    ("mathvista", _mv_data, _set("3", "question_type", "mcq"), "question_type", _mv_data),
    ("mathvista", _mv_data, _set("3", "image", "images/missing.png"), "image", _mv_data),
    ("mathvista", _mv_data, _set("1", "pid", None), "pid", _mv_data),
    ("mathverse", _mv_data, _set(0, "sample_index", None), "sample_index", _mv_data),
    ("mathverse", _mv_data, _set(0, "answer", "F"), "answer", _mv_data),
    ("mathverse", _mv_data, _set(0, "image", ""), "image", _mv_data),
    ("mathverse", _mv_data, _set(0, "question_type", "multiple"), "question_type", _mv_data),
    ("mathverse", _mv_data, _set(0, "metadata", "GeoQA"), "metadata", _mv_data),
    # issue 17 item 7: non-finite or fractional numbers and empty golds name file and field
    ("mathvista", _mv_data, _set("1", "precision", float("nan")), "precision", _mv_data),
    ("mathvista", _mv_data, _set("1", "precision", float("inf")), "precision", _mv_data),
    ("mathvista", _mv_data, _set("1", "precision", 1.5), "precision", _mv_data),
    ("mathvista", _mv_data, _set("1", "precision", -1), "precision", _mv_data),
    ("mathvista", _mv_data, _set("2", "answer", float("nan")), "answer", _mv_data),
    ("mathvista", _mv_data, _set("2", "answer", ""), "answer", _mv_data),
    ("mathvista", _mv_data, _set("2", "answer", "   "), "answer", _mv_data),
    ("mathverse", _mv_data, _set(2, "answer", ""), "answer", _mv_data),
]


@pytest.mark.parametrize(("name", "target", "edit", "field", "named"), BROKEN)
def test_broken_record_error_names_file_and_field(tmp_path, name, target, edit, field, named):
    root = fixture_copy(tmp_path, name)
    edit_json(target(root), edit)
    with pytest.raises(DatasetError) as info:
        load(name, data_dir=root)
    message = str(info.value)
    assert str(named(root)) in message and f"field {field!r}" in message
    assert info.value.field == field


def test_mathvista_precision_1e400_names_file_and_field(tmp_path):
    """JSON ``1e400`` parses to inf; it used to raise a bare OverflowError from int()."""
    root = fixture_copy(tmp_path, "mathvista")
    path = _mv_data(root)
    text = path.read_text()
    data = json.loads(text)
    data["1"]["precision"] = 12345.0
    path.write_text(json.dumps(data).replace("12345.0", "1e400"))
    with pytest.raises(DatasetError) as info:
        load("mathvista", data_dir=root)
    assert str(path) in str(info.value) and info.value.field == "precision" and "pid 1" in str(info.value)


def test_missing_geometry3k_diagram_names_the_image(tmp_path):
    root = fixture_copy(tmp_path, "geometry3k")
    (root / "test" / "6" / "img_diagram.png").unlink()
    with pytest.raises(DatasetError, match="img_diagram.png.*image file not found"):
        load("geometry3k", data_dir=root)


def test_undecodable_image_is_a_dataset_error(tmp_path):
    root = fixture_copy(tmp_path, "mathvista")
    (root / "images" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"2\.png.*field 'image': cannot decode image"):
        load("mathvista", data_dir=root)


def test_missing_geometry3k_split_folder_says_what_to_unzip(tmp_path):
    root = fixture_copy(tmp_path, "geometry3k")
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="unzip Geometry3K's test.zip"):
        load("geometry3k", data_dir=root)
    assert len(load("geometry3k", "train", data_dir=root)) == 3
    shutil.rmtree(root / "val")  # val/ is optional
    assert len(load("geometry3k", "train", data_dir=root)) == 2


def test_invalid_json_reports_the_line(tmp_path):
    root = fixture_copy(tmp_path, "geometry3k")
    _g3k_data(root).write_text('{\n  "id": 5,\n  "answer": A\n}')
    with pytest.raises(DatasetError, match=r"data\.json: invalid JSON at line 3"):
        load("geometry3k", data_dir=root)


def test_invalid_jsonl_line_reports_its_number(tmp_path):
    root = fixture_copy(tmp_path, "mathvista")
    records = list(json.loads(_mv_data(root).read_text()).values())
    _mv_data(root).unlink()
    lines = [json.dumps(records[0]), "{broken", json.dumps(records[1])]
    (root / "testmini.jsonl").write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"testmini\.jsonl: invalid JSON on line 2"):
        load("mathvista", data_dir=root)


def test_non_object_record_is_rejected(tmp_path):
    root = fixture_copy(tmp_path, "mathverse")
    edit_json(_mv_data(root), lambda data: data.append(["not", "a", "record"]))
    with pytest.raises(DatasetError, match=r"\[record item 4\]: record is list"):
        load("mathverse", data_dir=root)


# ----- through the env (LaViDa/VisualMath-v0, dataset=...) -------------------------------
def make_env(name: str, split: str = "test", **kw):
    import gymnasium as gym

    import lavida_envs  # noqa: F401  (registers the ids)

    return gym.make("LaViDa/VisualMath-v0", dataset=name, data_dir=str(FIXTURES / name), split=split, **kw)


def test_visual_math_env_on_mathvista_fixture_passes_check_env():
    from gymnasium.utils.env_checker import check_env

    env = make_env("mathvista")
    check_env(env.unwrapped)
    obs, info = env.reset(options={"index": 2})
    problem = load("mathvista", size=env.unwrapped.image_size)[2]
    assert obs["prompt"] == problem.prompt and np.array_equal(obs["image"], problem.image)
    assert (info["answer"], info["source"], info["difficulty"]) == ("C", "mathvista:testmini", 4)
    assert env.unwrapped.num_problems() == 5
    env.close()


@pytest.mark.parametrize(("name", "split"), [("geometry3k", "train"), ("geometry3k", "test"),
                                             ("mathvista", "test"), ("mathverse", "test")])
def test_reference_solutions_score_full_reward_and_wrong_answers_do_not(name, split):
    env = make_env(name, split).unwrapped
    for index in range(env.num_problems()):
        _, info = env.reset(options={"index": index})
        _, reward, terminated, _, step = env.step(info["solution"])
        assert terminated and step["correct"] and reward == pytest.approx(1.0), (index, step)
        wrong = "Z" if len(info["answer"]) == 1 else "123456789"
        _, reward, _, _, step = env.step(f"<think>guess</think><answer>{wrong}</answer>")
        assert not step["correct"] and reward < 0.5, (index, step)


def test_mathvista_option_text_is_accepted_like_its_letter():
    env = make_env("mathvista").unwrapped
    env.reset(options={"index": 2})  # pid 3: gold C = 145°
    assert env.step("<think>180 - 35</think><answer>145°</answer>")[4]["correct"]
    assert not env.step("<think>...</think><answer>140°</answer>")[4]["correct"]


def test_env_rejects_evaluation_only_benchmark_for_train():
    with pytest.raises(ValueError, match="no 'train' problems"):
        make_env("mathverse", "train")
