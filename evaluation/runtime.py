"""Process set-up shared by the ``lavida`` commands: torch CPU threads, and a check of how the process was launched.

**Threads** -- a ``--threads N`` option and a default that does not oversubscribe.

Torch starts one intra-op thread per core. The models here are tiny, so extra threads buy
little, and when other work shares the CPU (the math-verify worker pool, vector-env
subprocesses, another job) they cost a lot: on a 2-core machine with other work running the
demo's SFT step took 10.2 s with torch's default threads and 1.64 s with one thread.

:func:`resolve_threads` picks, in order: ``--threads N``; else ``OMP_NUM_THREADS`` from the
environment (set by the user, ``accelerate launch`` or ``lavida ablate``); else
:func:`default_threads` = ``min(4, max(1, cores // 2))`` of the cores this process may use
(``os.sched_getaffinity``) -- 1 on a 2-core machine, 4 from 8 cores up -- which leaves half
the machine for the worker processes. :func:`apply_threads` sets it with
``torch.set_num_threads``, exports ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for child processes
that do not set their own, and returns what to record (``results.json`` ``run.threads``).

**Launch** -- :func:`single_process_launch_warning`: ``accelerate launch --num_processes 2``
without ``--multi_gpu`` on a CPU-only host starts ONE process (accelerate's simple launcher)
with ``MASTER_ADDR``/``MASTER_PORT`` set but no ``WORLD_SIZE``; that combination is detected
and explained instead of silently evaluating everything in one process.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from agents.cli_args import at_least
from agents.distributed import single_process_launch_warning  # noqa: F401  (re-exported; lives with the launch code)

__all__ = [
    "THREADS_HELP",
    "add_threads_argument",
    "apply_threads",
    "default_threads",
    "resolve_threads",
    "single_process_launch_warning",
    "usable_cores",
]

#: Most threads the default gives (tiny models gain nothing from more).
MAX_DEFAULT_THREADS = 4
THREADS_HELP = (
    "torch CPU threads (default: $OMP_NUM_THREADS if set, else min(4, cores // 2), at least 1 -- "
    "not torch's one per core, which oversubscribes a CPU shared with the math workers or other jobs)"
)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """``min(4, max(1, cores // 2))`` for ``cores`` (default: :func:`usable_cores`)."""
    cores = usable_cores() if cores is None else int(cores)
    return min(MAX_DEFAULT_THREADS, max(1, cores // 2))


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` (default None: :func:`resolve_threads` decides) to ``parser``."""
    parser.add_argument("--threads", type=at_least(1), default=None, metavar="N", help=THREADS_HELP)


def resolve_threads(requested: int | None = None) -> tuple[int, str]:
    """``(threads, source)``: ``requested`` (``"--threads"``), ``$OMP_NUM_THREADS`` or the default."""
    if requested is not None:
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ValueError(f"--threads must be an int >= 1, got {requested!r}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value >= 1:
            return value, "OMP_NUM_THREADS"
    return default_threads(), "default"


def apply_threads(requested: int | None = None) -> dict[str, Any]:
    """Set torch's CPU threads per :func:`resolve_threads`; return ``{"threads", "source", "cores"}``."""
    import torch

    threads, source = resolve_threads(requested)
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    return {"threads": threads, "source": source, "cores": usable_cores()}


