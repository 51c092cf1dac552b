"""A VLM judge for image edits: semantic consistency x perceptual quality, cached on disk.

``JudgeScorer(policy, judge_id, cache_dir)`` shows any VLM policy an observation
``{"image": edited image, "prompt": instruction + rubric}`` and parses its reply for two
scores in 0..10: ``SC`` (semantic consistency: does the image follow the instruction) and
``PQ`` (perceptual quality: does it look clean and natural). The reward is::

    score = sqrt(SC * PQ) / 10          in [0, 1]

(the VIEScore "overall" rule). ``policy`` is anything with
``act(observations: list[dict], num_samples=1) -> list[list[action]]`` (docs/design.md, "Public API")
or a plain callable ``obs -> action``; an action is a str or ``{"text": str, ...}``.

Accepted replies (the last occurrence wins): ``SC: 7, PQ: 8`` (also ``semantic
consistency = 7``, ``7/10``) or a JSON object ``{"SC": 7, "PQ": 8}`` (also the keys
``semantic_consistency`` / ``perceptual_quality``). Anything else, or a value outside
0..10, scores 0 with the reason in :attr:`JudgeResult.error`. A judge that raises scores
0 and is not cached.

Hard timeout. Each call to the judge (one ``act`` call per batch of cache misses) runs in
a daemon thread and gets ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`); past it the
batch scores 0 with status ``timeout`` (not cached) and the caller gets control back at
once. Python cannot kill a thread, so the abandoned call keeps running in the background;
the next call first waits up to ``timeout`` for it and, if it is still running, scores 0
with status ``timeout`` too (so hung calls never pile up). :attr:`JudgeResult.status` is,
like the math verifier's, ``ok`` | ``parse_error`` (unusable reply) | ``timeout`` |
``judge_error`` (the judge raised or returned the wrong number of replies). A judge
policy that needs thread-local state (e.g. ``torch.inference_mode`` set by the caller)
must set it inside ``act``.

Cache: with ``cache_dir`` set, each verdict is a JSON file named by a BLAKE2 hash of
(image bytes, shapes and dtypes, instruction, judge id, rubric version); a hit returns the
stored verdict without calling the judge. Judges sample, so an env using one sets
``nondeterministic = True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lavida_envs.base import coerce_text

__all__ = ["DEFAULT_TIMEOUT", "JUDGE_STATUSES", "JudgeResult", "JudgeScorer", "RUBRIC", "parse_judge_reply"]

#: Seconds one judge call (one batch of cache misses) may take before it scores 0 with status timeout.
DEFAULT_TIMEOUT = 120.0
#: Statuses a :class:`JudgeResult` may carry.
JUDGE_STATUSES = ("ok", "parse_error", "timeout", "judge_error")

#: Bump when the rubric changes so old cache entries are not reused.
RUBRIC_VERSION = "1"
RUBRIC = (
    "You are judging an image edit. The edit instruction was: \"{instruction}\"\n"
    "{layout}"
    "Rate it on two scales from 0 to 10.\n"
    "SC (semantic consistency): 10 = the instruction is carried out exactly and nothing else "
    "changed, 0 = the instruction is ignored or the wrong thing changed.\n"
    "PQ (perceptual quality): 10 = clean, natural, artifact-free, 0 = broken or unrecognisable.\n"
    "Reply with exactly one line: SC: <0-10>, PQ: <0-10>"
)
_LAYOUT_OUTPUT = "The image shows the edited result.\n"
_LAYOUT_SIDE = "The image shows the source on the left and the edited result on the right.\n"
#: Replies are parsed only up to this many characters.
MAX_REPLY_CHARS = 4096
_NUM = r"(-?\d+(?:\.\d+)?)"
_SC_RE = re.compile(r"\b(?:SC|semantic[ _-]?consistency)\b\s*[:=]\s*" + _NUM, re.IGNORECASE)
_PQ_RE = re.compile(r"\b(?:PQ|perceptual[ _-]?quality)\b\s*[:=]\s*" + _NUM, re.IGNORECASE)
_JSON_KEYS = {
    "sc": ("sc", "semantic_consistency", "semantic consistency"),
    "pq": ("pq", "perceptual_quality", "perceptual quality"),
}


@dataclass
class JudgeResult:
    """One verdict: ``score`` = sqrt(SC * PQ) / 10, or 0 with ``error`` set."""

    score: float
    sc: float | None = None
    pq: float | None = None
    error: str | None = None
    reply: str = ""
    cached: bool = False
    status: str = "ok"


def _from_json(text: str) -> tuple[float | None, float | None]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, None
    try:
        obj = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    found: dict[str, float | None] = {"sc": None, "pq": None}
    for name, keys in _JSON_KEYS.items():
        for key in keys:
            value = lowered.get(key)
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                try:
                    found[name] = float(value)
                except ValueError:
                    continue
                break
    return found["sc"], found["pq"]


def parse_judge_reply(text: str) -> tuple[float | None, float | None, str | None]:
    """``(sc, pq, None)`` from a judge reply, or ``(None, None, reason)``."""
    text = text[:MAX_REPLY_CHARS]
    sc, pq = _from_json(text)
    if sc is None or pq is None:
        sc_hits, pq_hits = _SC_RE.findall(text), _PQ_RE.findall(text)
        sc = float(sc_hits[-1]) if sc_hits else None
        pq = float(pq_hits[-1]) if pq_hits else None
    if sc is None or pq is None:
        missing = " and ".join(n for n, v in (("SC", sc), ("PQ", pq)) if v is None)
        return None, None, f"unparsable judge reply: no {missing} score in {text[:120]!r}"
    for name, value in (("SC", sc), ("PQ", pq)):
        if not math.isfinite(value) or not 0.0 <= value <= 10.0:
            return None, None, f"judge {name}={value} outside 0..10"
    return sc, pq, None


class _JudgeTimeout(Exception):
    """The judge did not answer within its timeout."""


def _hash_images(h: Any, images: Sequence[np.ndarray | None]) -> None:
    for img in images:
        if img is None:
            h.update(b"|none")
            continue
        arr = np.ascontiguousarray(img)
        h.update(f"|{arr.dtype.str}{arr.shape}|".encode())
        h.update(arr.tobytes())


class JudgeScorer:
    """Scores edits with a VLM judge: sqrt(SC * PQ) / 10, cached on disk by content hash."""

    def __init__(
        self,
        policy: Any,
        judge_id: str = "judge",
        cache_dir: str | None = None,
        show_source: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 24 * 3600:
            raise ValueError(f"judge timeout must be seconds in (0, 86400], got {timeout!r}")
        if not (hasattr(policy, "act") or callable(policy)):
            raise TypeError(
                f"judge policy must have act(observations, num_samples) or be callable obs -> text, "
                f"got {type(policy).__name__}"
            )
        self.policy = policy
        self.judge_id = str(judge_id)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.show_source = bool(show_source)
        self.timeout = float(timeout)
        self._running: threading.Thread | None = None  # a call that outlived its timeout

    # ----- cache ----------------------------------------------------------------------
    def cache_key(self, output: np.ndarray, instruction: str, source: np.ndarray | None = None) -> str:
        """Hex key of (images, instruction, judge id, rubric version, layout)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{RUBRIC_VERSION}|{self.judge_id}|{self.show_source}|".encode())
        h.update(instruction.encode("utf-8", errors="replace"))
        _hash_images(h, [output, source if self.show_source else None])
        return h.hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _load(self, key: str) -> JudgeResult | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            result = JudgeResult(**{k: data[k] for k in ("score", "sc", "pq", "error", "reply")})
            result.status = str(data.get("status") or ("ok" if result.error is None else "parse_error"))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a corrupt entry is recomputed and overwritten
        result.cached = True
        return result

    def _store(self, key: str, result: JudgeResult) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {**asdict(result), "judge_id": self.judge_id, "rubric_version": RUBRIC_VERSION}
        record.pop("cached", None)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file

    # ----- judging --------------------------------------------------------------------
    def observation(self, output: np.ndarray, instruction: str, source: np.ndarray | None = None) -> dict[str, Any]:
        """What the judge sees: the edited image (or source|output side by side) and the rubric."""
        image, layout = output, _LAYOUT_OUTPUT
        if self.show_source and source is not None and source.shape == output.shape:
            image, layout = np.concatenate([source, output], axis=1), _LAYOUT_SIDE
        return {"image": image, "prompt": RUBRIC.format(instruction=instruction, layout=layout)}

    def _ask_bounded(self, observations: list[dict[str, Any]]) -> list[Any]:
        """The judge's replies, or :class:`_JudgeTimeout` after ``timeout`` seconds."""
        if self._running is not None:
            self._running.join(self.timeout)
            if self._running.is_alive():
                raise _JudgeTimeout(f"judge still busy with an earlier call that exceeded {self.timeout:g}s")
            self._running = None
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["replies"] = self._ask(observations)
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        thread = threading.Thread(target=call, name="lavida-judge", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._running = thread
            raise _JudgeTimeout(f"judge call exceeded {self.timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["replies"]

    def _ask(self, observations: list[dict[str, Any]]) -> list[Any]:
        if hasattr(self.policy, "act"):
            return [samples[0] for samples in self.policy.act(observations, num_samples=1)]
        call: Callable[[dict[str, Any]], Any] = self.policy
        return [call(obs) for obs in observations]

    def score_batch(
        self, outputs: Sequence[np.ndarray], instructions: Sequence[str], sources: Sequence[np.ndarray | None] | None = None
    ) -> list[JudgeResult]:
        """Verdicts for many edits; cache misses go to the judge in one ``act`` call."""
        sources = list(sources) if sources is not None else [None] * len(outputs)
        keys = [self.cache_key(o, i, s) for o, i, s in zip(outputs, instructions, sources)]
        results: list[JudgeResult | None] = [self._load(k) for k in keys]
        todo = [n for n, r in enumerate(results) if r is None]
        if todo:
            observations = [self.observation(outputs[n], instructions[n], sources[n]) for n in todo]
            try:
                replies = self._ask_bounded(observations)
                if len(replies) != len(todo):
                    raise ValueError(f"judge returned {len(replies)} replies for {len(todo)} observations")
            except Exception as exc:  # a failing or hung judge scores 0 and is retried next time
                if isinstance(exc, _JudgeTimeout):
                    error, status = str(exc), "timeout"
                else:
                    error, status = f"judge failed: {type(exc).__name__}: {str(exc)[:200]}", "judge_error"
                for n in todo:
                    results[n] = JudgeResult(score=0.0, error=error, status=status)
                return [r for r in results if r is not None]
            for n, reply in zip(todo, replies):
                result = self._verdict(reply)
                self._store(keys[n], result)
                results[n] = result
        return [r for r in results if r is not None]

    @staticmethod
    def _verdict(reply: Any) -> JudgeResult:
        text, error = coerce_text(reply)
        if text is None:
            return JudgeResult(score=0.0, error=f"unusable judge reply: {error}", status="parse_error")
        sc, pq, error = parse_judge_reply(text)
        if error is not None or sc is None or pq is None:
            return JudgeResult(score=0.0, error=error, reply=text[:MAX_REPLY_CHARS], status="parse_error")
        return JudgeResult(score=math.sqrt(sc * pq) / 10.0, sc=sc, pq=pq, reply=text[:MAX_REPLY_CHARS])

    def score(self, output: np.ndarray, instruction: str, source: np.ndarray | None = None) -> JudgeResult:
        """The verdict for one edit."""
        return self.score_batch([output], [instruction], [source])[0]

    def __call__(self, output: np.ndarray, instruction: str, source: np.ndarray | None = None) -> float:
        """sqrt(SC * PQ) / 10 for one edit (0 on an unusable reply)."""
        return self.score(output, instruction, source).score
