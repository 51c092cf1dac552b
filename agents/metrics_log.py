"""Training metrics: ``output_dir/metrics.jsonl`` (+ accelerate trackers) and the collapse alarm.

* :class:`MetricsLog` -- one JSON object per logged step (``{"step": ..., name: value}``),
  appended and flushed at once, written by the main process only; non-finite numbers are
  written as ``null`` (valid JSON). On resume from step ``s`` the rows after ``s`` (written
  by the killed run after its last checkpoint) are dropped first, so the file ends up
  identical to an uninterrupted run's; so is a cut-off last line (killed mid-write), while a
  corrupt line before it raises ``ValueError`` naming the file and line. Rows also go to the accelerator's trackers
  (``report_to``), when it has any.
* :class:`CollapseAlarm` -- the collapse signal (docs/design.md, "Monitoring"): over the last
  ``window`` steps, the reward's second-half mean is at least ``reward_drop`` (absolute)
  below its first-half mean AND the entropy's is at least ``entropy_drop`` (relative)
  below its own; it then reports once and stays quiet for another ``window`` steps. Its
  history is part of the checkpoint (``state_dict``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["CollapseAlarm", "MetricsLog", "jsonable", "read_metrics"]


def jsonable(value: Any) -> Any:
    """``value`` with floats made JSON-safe (NaN/Inf -> None) and tensors/numpy scalars unwrapped."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parse(path: str) -> list[tuple[str, dict[str, Any]]]:
    """``(line, row)`` of each row of a metrics file; a cut-off last line is dropped, a corrupt one raises."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    rows = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if number == len(lines):  # no newline after it: the write was cut off
                break
            raise ValueError(
                f"{path}: line {number} is not valid JSON ({exc}); delete that line (or the file, losing the "
                "log), or train into a new output_dir"
            ) from None
        if not isinstance(row, dict) or isinstance(row.get("step", 0), bool) or not isinstance(row.get("step", 0), int):
            raise ValueError(
                f"{path}: line {number} is not a metrics row with an integer 'step' ({line[:80]!r}); delete that "
                "line, or train into a new output_dir"
            )
        rows.append((line, row))
    return rows


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a cut-off last line dropped; a corrupt line is a ``ValueError`` naming it)."""
    return [row for _, row in _parse(path)]


class MetricsLog:
    """Append-only JSONL metrics file (main process only) mirrored to accelerate trackers."""

    def __init__(self, path: str, accelerator: Any = None, resume_step: int | None = None) -> None:
        self.path = path
        self.accelerator = accelerator
        self.enabled = accelerator is None or accelerator.is_main_process
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if resume_step is None:
            open(path, "w", encoding="utf-8").close()
        elif os.path.isfile(path):
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        kept = [line + "\n" for line, row in _parse(self.path) if row.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (must hold ``step``) and send it to the trackers."""
        if not self.enabled:
            return
        row = jsonable(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if self.accelerator is not None and getattr(self.accelerator, "trackers", None):
            numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(numbers, step=int(row["step"]))

    @staticmethod
    def read(path: str) -> list[dict[str, Any]]:
        """All rows of a metrics file; a cut-off last line (a run killed mid-write) is dropped."""
        return [row for _, row in _parse(path)]


class CollapseAlarm:
    """Reward and entropy falling together over a window of steps (see the module docstring)."""

    def __init__(self, window: int, reward_drop: float = 0.05, entropy_drop: float = 0.1) -> None:
        self.window, self.reward_drop, self.entropy_drop = int(window), float(reward_drop), float(entropy_drop)
        self.history: list[tuple[float, float]] = []
        self.quiet_until = 0

    def update(self, step: int, reward: float, entropy: float) -> str | None:
        """Record one step; a warning message when the alarm fires, else None."""
        if self.window < 4 or not (math.isfinite(reward) and math.isfinite(entropy)):
            return None
        self.history = (self.history + [(float(reward), float(entropy))])[-self.window :]
        if len(self.history) < self.window or step < self.quiet_until:
            return None
        half = self.window // 2
        first, second = self.history[:half], self.history[-half:]
        r0, r1 = (sum(r for r, _ in part) / half for part in (first, second))
        e0, e1 = (sum(e for _, e in part) / half for part in (first, second))
        if r0 - r1 >= self.reward_drop and e0 - e1 >= self.entropy_drop * abs(e0):
            self.quiet_until = step + self.window
            return (
                f"collapse alarm at step {step}: over the last {self.window} steps reward fell "
                f"{r0:.3f} -> {r1:.3f} and entropy fell {e0:.3f} -> {e1:.3f}; lower the learning rate, "
                "keep the SFT regularizer or lower forcing_prob"
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        """History and cooldown (for checkpoints)."""
        return {"history": list(self.history), "quiet_until": self.quiet_until}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.history = [tuple(x) for x in state.get("history", [])]
        self.quiet_until = int(state.get("quiet_until", 0))
