"""Math reward: labelled cases, statuses, hostile inputs, hard timeouts, restarts, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from lavida_envs.rewards import math as mr
from lavida_envs.rewards.math import check_answer, extract_answer, math_equal, math_equal_batch
from lavida_envs.rewards.math_cases import CASES

# A check the workers must do symbolically and that runs far past any small timeout.
SLOW = (r"(1+\sqrt{2})^{9000}-(1-\sqrt{2})^{9000}", r"\sqrt{3}")


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    mr.warmup()
    yield
    mr.shutdown()


def _workers() -> list:
    return list(mr._pool().workers)


def test_case_list_is_large_and_mixed() -> None:
    assert len(CASES) >= 200
    labels = [label for _, _, label in CASES]
    assert 0.3 < sum(labels) / len(labels) < 0.8


def test_every_labelled_case() -> None:
    got = math_equal_batch([(p, g) for p, g, _ in CASES])
    wrong = [(p, g, label) for (p, g, label), value in zip(CASES, got) if value != label]
    assert wrong == []


def test_batch_is_order_independent_and_deterministic() -> None:
    pairs = [(p, g) for p, g, _ in CASES[::3]]
    first = math_equal_batch(pairs)
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)
    shuffled = math_equal_batch([pairs[i] for i in order])
    assert [shuffled[order.index(i)] for i in range(len(pairs))] == first
    assert math_equal_batch(pairs) == first
    assert [math_equal(p, g) for p, g in pairs[:10]] == first[:10]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>so</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        (r"<answer>\boxed{\frac{1}{2}}</answer>", r"\frac{1}{2}"),
        (r"<answer>$\boxed{7}$</answer>", "7"),
        (r"<answer>\boxed{1} and \boxed{2}</answer>", r"\boxed{1} and \boxed{2}"),
        (r"first \boxed{1}, finally \boxed{\frac{3}{4}}.", r"\frac{3}{4}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        ("<answer>\n(1, 2]\n</answer>", "(1, 2]"),
        ("no answer here", None),
        ("<answer>  </answer>", None),
        (r"\boxed{3", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_non_str() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, gold, kwargs, correct, status",
    [
        ("<think>r</think><answer>7</answer>", "7", {}, True, "ok"),
        ("<answer>8</answer>", "7", {}, False, "ok"),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", {}, True, "ok"),
        ("<answer>x = 3</answer>", "3", {}, True, "ok"),
        ("the answer is 7", "7", {}, False, "no_answer"),
        ("<answer>" + "1" * 1001 + "</answer>", "7", {}, False, "too_long"),
        ("<answer>__import__('os')</answer>", "7", {}, False, "rejected"),
        (r"<answer>\frac{</answer>", "7", {}, False, "parse_error"),
        ("<answer>(B)</answer>", "B", {"choices": ["1", "2", "3"]}, True, "ok"),
        ("<answer>B</answer>", "A", {"choices": ["1", "2", "3"]}, False, "ok"),
        ("<answer>0.5</answer>", "A", {"choices": [r"\frac{1}{2}", "2"]}, True, "ok"),
        ("<answer>2</answer>", "A", {"choices": [r"\frac{1}{2}", "2"]}, False, "ok"),
        ("<answer>A: 1/2</answer>", "A", {"choices": [r"\frac{1}{2}", "2"]}, True, "ok"),
        ("<answer>Red</answer>", "B", {"choices": ["blue", "red"]}, True, "ok"),
        (r"<answer>\text{C}</answer>", "C", {"answer_type": "choice"}, True, "ok"),
        ("<answer>3.0</answer>", "3", {"answer_type": "number"}, True, "ok"),
        ("<answer>x+1</answer>", "3", {"answer_type": "number"}, False, "parse_error"),
        ("<answer>RIGHT angle</answer>", "right angle", {"answer_type": "text"}, True, "ok"),
    ],
)
def test_check_answer(text: str, gold: str, kwargs: dict, correct: bool, status: str) -> None:
    verdict = check_answer(text, gold, **kwargs)
    assert (verdict.correct, verdict.status) == (correct, status)
    if status == "ok":
        assert verdict.error is None  # a plain wrong answer has no error
    else:
        assert verdict.error and isinstance(verdict.error, str)


def test_check_answer_bad_arguments() -> None:
    with pytest.raises(ValueError, match="answer_type"):
        check_answer("<answer>1</answer>", "1", answer_type="float")
    with pytest.raises(ValueError, match="out of range"):
        check_answer("<answer>1</answer>", "E", choices=["1", "2"])
    with pytest.raises(ValueError, match="timeout"):
        math_equal("1", "1", timeout=0)


def test_hostile_inputs_fail_fast_and_execute_nothing(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"pwned_{uuid.uuid4().hex}"
    timeout = 1.0
    injections = [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}','w')\")",
        f"(lambda: open('{marker}', 'w'))()",
        f"[c for c in ().__class__.__bases__[0].__subclasses__()]; open('{marker}','w')",
    ]
    hostile = injections + [
        "",
        "x" * 1_000_000,
        "\\frac{" * 10_000,
        "10^{10^{10^{10}}}",
        "9^{9^{9}}",
        "\x00\x01\x1b[31m",
        "\udcff",
        "(" * 500 + "1" + ")" * 500,
        "`rm -rf /`",
    ]
    for answer in hostile:
        for call in (
            lambda a: check_answer(f"<answer>{a}</answer>", "3", timeout=timeout),
            lambda a: mr._compare_batch([(a, "3")], timeout)[0],
        ):
            start = time.monotonic()
            result = call(answer)
            elapsed = time.monotonic() - start
            assert elapsed < timeout + 1.0, (answer[:40], elapsed)
            assert result.status != "ok" and not getattr(result, "correct", getattr(result, "equal", None))
    assert check_answer("x" * 1_000_000, "3").status == "too_long"
    assert not marker.exists()


def test_worker_parser_executes_nothing_even_unscreened() -> None:
    """Defense in depth: the worker's LaTeX-only parsing does not run Python, screen or not."""
    from lavida_envs.rewards.math_worker import Checker

    marker = Path("/tmp") / f"pwned_{uuid.uuid4().hex}"
    checker = Checker()
    for text in (f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')"):
        equal, _, _ = checker.equal(text, "0")
        assert not equal
    assert not marker.exists()


def test_soft_timeout_keeps_the_worker() -> None:
    mr.warmup(1)
    pids = {w.proc.pid for w in _workers()}
    start = time.monotonic()
    result = mr._compare_batch([SLOW], 1.0)[0]
    assert time.monotonic() - start < 2.0
    assert (result.equal, result.status) == (False, "timeout")
    assert "1s" in result.error
    assert {w.proc.pid for w in _workers()} & pids  # still alive, no restart needed
    assert math_equal(r"2\sqrt{2}", r"\sqrt{8}")


def test_hung_worker_is_killed_and_replaced() -> None:
    mr.warmup()
    frozen = [w.proc for w in _workers()]
    for proc in frozen:  # simulate a check stuck in C code: the worker stops answering
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        verdict = check_answer(r"<answer>\frac{\pi}{2}</answer>", r"0.5\pi", timeout=1.0)
        assert time.monotonic() - start < 2.0
        assert (verdict.correct, verdict.status) == (False, "timeout")
    finally:
        for proc in frozen:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
    assert any(proc.poll() is not None for proc in frozen)  # the stuck one was killed
    # the replacement gives right answers, within a batch that also has a slow item
    got = mr._compare_batch([(r"\frac{\pi}{2}", r"0.5\pi"), SLOW, (r"2\sqrt{3}", r"\sqrt{8}"), ("(A)", "A")], 1.0)
    assert [(r.equal, r.status) for r in got] == [(True, "ok"), (False, "timeout"), (False, "ok"), (True, "ok")]


def test_dead_worker_is_replaced() -> None:
    mr.warmup(1)
    victim = _workers()[0].proc
    victim.kill()
    victim.wait()
    assert math_equal(r"\frac{2\pi}{3}", r"\frac{4\pi}{6}")
    assert victim not in [w.proc for w in _workers()]


def _child(queue) -> None:  # runs in a forked daemonic process, like an AsyncVectorEnv worker
    queue.put((os.getpid(), math_equal(r"3\sqrt{3}", r"\sqrt{27}"), [w.proc.pid for w in mr._pool().workers]))


def test_forked_daemonic_child_uses_its_own_workers() -> None:
    mr.warmup(1)
    parent_pids = [w.proc.pid for w in _workers()]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,), daemon=True)
    child.start()
    pid, equal, child_workers = queue.get(timeout=60)
    child.join(timeout=30)
    assert equal and pid != os.getpid()
    assert child_workers and not set(child_workers) & set(parent_pids)
    assert [w.proc.pid for w in _workers()] == parent_pids  # the parent's workers are untouched
    assert math_equal(r"\sqrt{50}", r"5\sqrt{2}")


def test_workers_run_with_a_memory_cap() -> None:
    mr.warmup(1)
    limits = Path(f"/proc/{_workers()[0].proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max address space"))
    assert line.split()[3] == str(2048 * 1024 * 1024)


def test_concurrent_threads_get_their_own_answers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(p, g) for p, g, _ in CASES[1::8]]
    expected = [label for _, _, label in CASES[1::8]]
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda k: math_equal_batch(pairs[k:] + pairs[:k]), [0, 5, 9]))
    for k, out in zip([0, 5, 9], outs):
        assert out == expected[k:] + expected[:k]


# ----- worker deaths and start-up (issue 17 items 2 and 3) ---------------------------------
_FAKE_WORKER = '''
import json, os, sys
def main():
    out = sys.stdout
    mode = {mode!r}
    if mode == "no_start":
        sys.stderr.write("fake worker: cannot import math_verify\\n"); sys.stderr.flush()
        os._exit(3)
    out.write(json.dumps({{"ready": True, "pid": os.getpid()}}) + "\\n"); out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        marker = {marker!r}
        if mode == "always_die" or (mode == "die_once" and not os.path.exists(marker)):
            open(marker, "w").close()
            os._exit(9)  # dies mid-item, like the OOM killer
        for i, _ in enumerate(request["items"]):
            out.write(json.dumps({{"id": request["id"], "i": i, "equal": True, "status": "ok", "error": None}}) + "\\n")
            out.flush()
    return 0
'''


def _fake_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, size: int = 1):
    from lavida_envs.rewards import math_pool

    script = tmp_path / f"fake_worker_{mode}.py"
    script.write_text(_FAKE_WORKER.format(mode=mode, marker=str(tmp_path / f"died_{mode}")))
    monkeypatch.setattr(math_pool, "_WORKER_FILE", str(script))
    return math_pool.WorkerPool(size)


def test_worker_that_dies_mid_check_is_retried_on_a_fresh_worker(tmp_path, monkeypatch) -> None:
    pool = _fake_pool(tmp_path, monkeypatch, "die_once")
    try:
        got = pool.run([[("2", "2")], [("3", "3")]], timeout=2.0)
    finally:
        pool.close()
    assert (tmp_path / "died_die_once").exists()  # the first worker did die on the first item
    assert [(r.equal, r.status) for r in got] == [(True, "ok"), (True, "ok")]


def test_worker_dying_on_every_try_reports_worker_error_in_bounded_time(tmp_path, monkeypatch) -> None:
    from lavida_envs.rewards.math_pool import MAX_RETRIES

    pool = _fake_pool(tmp_path, monkeypatch, "always_die")
    start = time.monotonic()
    try:
        got = pool.run([[("2", "2")]], timeout=1.0)
    finally:
        pool.close()
    assert time.monotonic() - start < 10
    assert (got[0].equal, got[0].status) == (False, "worker_error")
    assert f"{MAX_RETRIES + 1} times" in got[0].error
    assert "worker_error" in mr.STATUSES


def test_worker_that_cannot_start_reports_worker_error_with_its_stderr(tmp_path, monkeypatch) -> None:
    pool = _fake_pool(tmp_path, monkeypatch, "no_start")
    start = time.monotonic()
    try:
        got = pool.run([[("2", "2")], [("3", "3")]], timeout=1.0)
        assert pool.prestart() is False  # never raises
    finally:
        pool.close()
    assert time.monotonic() - start < 15
    assert [r.status for r in got] == ["worker_error", "worker_error"]
    assert "cannot import math_verify" in got[0].error


def test_killed_idle_workers_do_not_change_a_score() -> None:
    for _ in range(3):
        mr.warmup()
        for worker in _workers():
            os.kill(worker.proc.pid, signal.SIGKILL)  # no wait: the next check races the death
        verdict = check_answer(r"<answer>2\sqrt{2}</answer>", r"\sqrt{8}")
        assert (verdict.correct, verdict.status) == (True, "ok"), verdict


def test_worker_killed_during_a_batch_changes_no_result() -> None:
    import threading

    mr.warmup()
    pairs = [(rf"{k}\sqrt{{2}}", rf"\sqrt{{{2 * k * k}}}") for k in range(2, 120)]
    victims = [w.proc for w in _workers()]

    def kill_soon() -> None:
        time.sleep(0.15)
        for proc in victims:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    got = mr._compare_batch(pairs, 3.0)
    killer.join()
    assert [(r.equal, r.status) for r in got] == [(True, "ok")] * len(pairs)


def test_visual_math_reset_readies_a_worker_so_the_first_step_meets_its_timeout() -> None:
    import gymnasium as gym

    import lavida_envs  # noqa: F401

    mr.shutdown()  # a fresh process's state: no workers yet
    env = gym.make("LaViDa/VisualMath-v0", split="test", difficulty=4, image_size=64, families=["right"])
    _, info = env.reset(options={"index": 0})
    assert mr._pool().has_ready()
    answer = info["answer"]  # a surd: only the workers can check "<surd> + 0"
    start = time.monotonic()
    _, reward, *_, step_info = env.step(f"<think>t</think><answer>{answer}+0</answer>")
    assert time.monotonic() - start < 1.0  # no worker start-up inside the check
    assert reward == pytest.approx(1.0), step_info["error"]
    env.close()


# ----- answer forms (issue 17 item 20; rules in lavida_envs.rewards.math_normalize) ---------
ANSWER_FORMS = [
    # mixed numbers: a whole number and a proper fraction
    ("4 4/9", r"\frac{40}{9}", True), ("-2 1/2", "-2.5", True), (r"4\frac{4}{9}", "4 4/9", True),
    ("4 4/9", "16/9", False), (r"2\frac{1}{2}", "1", False), (r"2 \cdot \frac{1}{2}", "1", True),
    # percent words are the % sign
    ("33.5 percent", r"33.5\%", True), ("33.5 pct", "33.5", True), ("33.5 percent", "0.335", True),
    ("33.5 per cent", "33.5", True), ("33.5 percent", "33", False),
    # trailing unit words: the number counts, the unit is not compared
    ("10 weeks", "10", True), ("10 cm^2", "10", True), ("10", "10 weeks", True), ("10 weeks", "11", False),
    ("10 x", "10", False), ("10 x^2", "10", False), ("10 thousand", "10", False), ("3 and 4", "3", False),
    ("30 degrees", r"\frac{\pi}{6}", True),
    # assignments (already accepted; pinned here)
    ("x = 2", "2", True), ("2", "x = 2", True), ("AB = 5", "5", True), ("x = 2 or x = 3", "2", False),
    # clock times
    ("3:30 PM", "3:30", True), ("3:30 p.m.", "3:30 pm", True), ("15:30", "3:30 PM", True),
    ("3:30 AM", "3:30 PM", False), ("3:45", "3:30", False),
    # modular answers are their residue; two moduli must agree
    (r"17 \bmod 7 = 3", "3", True), (r"3 \pmod{7}", "3", True), (r"n \equiv 3 \pmod{7}", r"3 \pmod{7}", True),
    (r"17 \bmod 7 = 3", "4", False), (r"3 \pmod{8}", r"3 \pmod{7}", False),
    # a stray trailing backslash
    ("5\\", "5", True), ("5\\", "6", False),
]


@pytest.mark.parametrize("pred, gold, expected", ANSWER_FORMS)
def test_answer_forms(pred: str, gold: str, expected: bool) -> None:
    assert math_equal(pred, gold) is expected


def test_answer_form_rules_reach_check_answer_and_stay_cheap() -> None:
    from lavida_envs.rewards import math_normalize as mn

    verdict = check_answer("<answer>4 4/9 cups</answer>", r"\frac{40}{9}")
    assert (verdict.correct, verdict.status) == (True, "ok")
    assert check_answer("<answer>10 weeks</answer>", "10", answer_type="number").correct
    for hostile in ("\\mod " * 190, "1 " * 499 + "x", "1:" * 499, "1\\," * 300 + "cm"):
        start = time.monotonic()
        mn.split_modulus(hostile), mn.strip_unit(hostile), mn.parse_clock(hostile), mn.parse_number(hostile)
        assert time.monotonic() - start < 0.5
