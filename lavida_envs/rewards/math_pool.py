"""Pool of math-verify worker subprocesses with hard per-check deadlines (parent side).

``WorkerPool(size).run(items, timeout) -> list[Result]``: each item is a list of
candidate (pred, gold) LaTeX pairs (see ``math_worker`` for the line protocol). Items
go out in batches (one JSON line per batch, amortising IPC) to up to ``size``
``subprocess.Popen`` workers, handed to whichever *ready* worker is idle (a worker still
importing math-verify gets work only while no worker of the pool is ready). Each item gets
``timeout`` seconds from the moment its worker is ready for it (the reply to the
previous item); a worker that misses the deadline is killed, the item reports
``timeout``, a fresh worker starts at once, and the rest of its batch is re-queued.

Worker deaths (OOM killer, ``kill -9``, a crash) are the verifier's fault, not the
answer's: the item a dead worker was on is re-queued and checked again by another (or a
fresh) worker, at most :data:`MAX_RETRIES` times; only then does it report status
``worker_error``. A worker that dies before it is ready is replaced the same way: one that
fails by itself (e.g. an import error) counts as a failed start-up, at most
:data:`MAX_RETRIES` per run; one killed by a signal from outside is replaced until the
run is :data:`STARTUP_TIMEOUT` old, then counts too. One that is not ready within
:data:`STARTUP_TIMEOUT`, or start-ups that keep failing, fail the remaining items with
``worker_error`` and the worker's last stderr line. So a run is bounded: in the worst case
(workers killed faster than they can start) about ``STARTUP_TIMEOUT`` plus a few
start-ups, and ``timeout`` per item once workers are ready and stay alive (a death costs
a retry on another ready worker, or one start-up). :meth:`WorkerPool.prestart`
makes one worker ready so that later runs never wait for a start-up (extra workers a
batch could use start in the background and take work once ready). POSIX only (``selectors`` on pipes).
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["MAX_RETRIES", "Result", "STARTUP_TIMEOUT", "WorkerPool"]

#: Seconds a fresh worker may take to import math-verify and report ready.
STARTUP_TIMEOUT = 60.0
#: Most items sent to one worker in one message.
MAX_BATCH = 16
#: Times an item whose worker died is checked again on another worker before ``worker_error``.
MAX_RETRIES = 2
_WORKER_FILE = str(Path(__file__).resolve().with_name("math_worker.py"))
# Load math_worker.py by path without importing the lavida_envs package (which pulls in
# gymnasium and numpy: slower start, more memory per worker); the '' entry that -c puts
# on sys.path is dropped first so nothing in the current directory can shadow a module.
_BOOT = (
    "import sys; sys.path.pop(0); import importlib.util as u; "
    "s = u.spec_from_file_location('lavida_math_worker', sys.argv[1]); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); sys.exit(m.main())"
)



def _readable(workers: list, wait: float) -> list:
    """The workers whose output can be read within ``wait`` seconds (one select over their fds)."""
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            selector.register(worker.fd, selectors.EVENT_READ, worker)
        return [key.data for key, _ in selector.select(wait)]

class Result(NamedTuple):
    """Outcome of one comparison: equal?, status and the reason when not a plain answer."""

    equal: bool
    status: str
    error: str | None


class _Worker:
    """One math_worker.py child process and its read buffer."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, _WORKER_FILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False
        self.last_event = time.monotonic()
        self.batch: tuple[int, list[int]] | None = None  # (batch id, item indices)
        self.position = 0  # index within the batch of the item being checked

    def send(self, message: dict[str, Any]) -> bool:
        """Write one request line; False when the worker is gone."""
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def read(self) -> list[dict[str, Any]] | None:
        """Complete reply lines available now; None at EOF (the worker died)."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        messages = []
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue  # not protocol: ignore
        return messages

    def deadline(self, timeout: float) -> float:
        """When the current item (or startup) must be done by."""
        return self.last_event + (timeout if self.ready else STARTUP_TIMEOUT)

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr (for error messages)."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 600))
            tail = self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return tail.splitlines()[-1][:300] if tail else ""

    def kill(self) -> None:
        """Stop the worker now and release its pipes."""
        try:
            self.proc.kill()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.abandon()

    def abandon(self) -> None:
        """Close this process's handles without signalling (used in a forked child)."""
        for handle in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                handle.close()
            except (OSError, ValueError):
                pass


class _Run:
    """State of one :meth:`WorkerPool.run` call."""

    def __init__(self, items: list[list[tuple[str, str]]], timeout: float, size: int) -> None:
        self.items, self.timeout = items, timeout
        self.results: list[Result | None] = [None] * len(items)
        per = max(1, min(MAX_BATCH, -(-len(items) // (2 * size))))
        self.queue: deque[list[int]] = deque(
            list(range(i, min(i + per, len(items)))) for i in range(0, len(items), per)
        )
        self.deaths: dict[int, int] = {}  # item index -> workers that died while checking it
        self.failed_starts = 0
        self.began = time.monotonic()

    def fail_queue(self, reason: str) -> None:
        """Every queued item reports ``worker_error`` with ``reason``."""
        for batch in self.queue:
            for index in batch:
                self.results[index] = Result(False, "worker_error", reason)
        self.queue.clear()


class WorkerPool:
    """Up to ``size`` math workers owned by the process that made the pool."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.workers: list[_Worker] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one run at a time: replies are matched per worker

    # ----- start-up ---------------------------------------------------------------------
    def has_ready(self) -> bool:
        """Is some worker ready (imported and warmed)? No system calls: cheap enough per reset."""
        return any(w.ready for w in self.workers)

    def start(self, count: int | None = None) -> None:
        """Start workers up to ``count`` (default ``size``) and wait until they are ready."""
        want = min(self.size, count or self.size)
        with self._lock:
            self._fill(want)
            self._await_ready(want)

    def prestart(self) -> bool:
        """Make one worker ready (blocking, at most :data:`STARTUP_TIMEOUT`); True when one is.

        One is enough for checks that come one at a time (``env.step``); a batch that
        could use more starts them in the background, and they take work once ready.
        Cheap when a worker is ready already.
        """
        if self.has_ready():
            return True
        with self._lock:
            self._fill(1)
            self._await_ready(1)
            return self.has_ready()

    def _prune(self) -> None:
        """Forget workers that exited (closing their pipes, so deaths leak no descriptors)."""
        alive = []
        for worker in self.workers:
            if worker.proc.poll() is None:
                alive.append(worker)
            else:
                worker.kill()  # reaped already; closes the handles
        self.workers = alive

    def _fill(self, want: int) -> None:
        self._prune()
        while len(self.workers) < want:
            self.workers.append(_Worker())

    def _await_ready(self, want: int) -> None:
        """Read ready lines until ``want`` idle workers are ready or :data:`STARTUP_TIMEOUT` passes."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while sum(w.ready for w in self.workers) < min(want, len(self.workers)):
            pending = [w for w in self.workers if not w.ready]
            wait = deadline - time.monotonic()
            if not pending or wait <= 0:
                return
            for worker in _readable(pending, wait):
                self._read_startup(worker)

    def _read_startup(self, worker: _Worker) -> None:
        """Read a starting worker's lines: mark it ready on its ready line; drop it if it could not start."""
        messages = worker.read()
        if messages is None:  # could not start: drop it; the next run reports why
            worker.kill()
            self.workers.remove(worker)
            return
        for message in messages:
            if message.get("ready"):
                worker.ready, worker.last_event = True, time.monotonic()

    def close(self) -> None:
        """Kill every worker."""
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def abandon(self) -> None:
        """Forget the workers without killing them (they belong to another process)."""
        for worker in self.workers:
            worker.abandon()
        self.workers = []

    # ----- checking ---------------------------------------------------------------------
    def run(self, items: list[list[tuple[str, str]]], timeout: float) -> list[Result]:
        """Check every item; never waits past the per-item deadlines (see the module docstring)."""
        with self._lock:
            return self._run(items, timeout)

    def _run(self, items: list[list[tuple[str, str]]], timeout: float) -> list[Result]:
        run = _Run(items, timeout, self.size)
        self._prune()
        self._collect_ready()
        while len(self.workers) < min(self.size, len(run.queue)):
            self.workers.append(_Worker())  # joins once ready (at once when no worker is ready)
        try:
            while run.queue or any(w.batch for w in self.workers):
                if run.queue and not self.workers:
                    self.workers.append(_Worker())
                self._dispatch(run)
                self._wait(run)
        finally:
            for worker in [w for w in self.workers if w.batch is not None]:
                worker.kill()  # interrupted mid-batch: stale replies must never be read later
                self.workers.remove(worker)
        return [r if r is not None else Result(False, "timeout", "math check not run") for r in run.results]

    def _collect_ready(self) -> None:
        """Consume the ready lines of idle workers that finished starting in the background."""
        for worker in [w for w in self.workers if not w.ready and w.batch is None]:
            self._read_startup(worker)

    def _dispatch(self, run: _Run) -> None:
        any_ready = self.has_ready()
        for worker in list(self.workers):
            if worker.batch is None and run.queue and (worker.ready or not any_ready):
                indices = run.queue.popleft()
                batch = next(self._ids)
                message = {"id": batch, "timeout": run.timeout, "items": [run.items[i] for i in indices]}
                worker.batch, worker.position = (batch, indices), 0
                if worker.ready:
                    worker.last_event = time.monotonic()
                if not worker.send(message):  # died while idle: no item is to blame
                    worker.position = -1
                    self._retire(worker, run, "worker_error", "math worker exited")

    def _wait(self, run: _Run) -> None:
        watched = [w for w in self.workers if w.batch is not None or not w.ready]
        if not watched:
            return
        now = time.monotonic()
        wait = max(0.0, min(w.deadline(run.timeout) for w in watched) - now)
        for worker in _readable(watched, wait):
            messages = worker.read()
            if messages is None:
                self._retire(worker, run, "worker_error", "math worker died")
                continue
            for message in messages:
                self._accept(worker, message, run.results)
        now = time.monotonic()
        for worker in [w for w in self.workers if (w.batch is not None or not w.ready) and now > w.deadline(run.timeout)]:
            if worker.ready:
                self._retire(worker, run, "timeout", f"math check exceeded {run.timeout:g}s")
            else:
                self._retire(worker, run, "worker_error", f"math worker not ready in {STARTUP_TIMEOUT:g}s")

    def _accept(self, worker: _Worker, message: dict[str, Any], results: list) -> None:
        worker.last_event = time.monotonic()
        if message.get("ready"):
            worker.ready = True
            return
        if worker.batch is None or message.get("id") != worker.batch[0] or message.get("i") != worker.position:
            return  # stale or malformed
        indices = worker.batch[1]
        error = message.get("error")
        results[indices[worker.position]] = Result(
            bool(message.get("equal")), str(message.get("status", "parse_error")), error and str(error)
        )
        worker.position += 1
        if worker.position >= len(indices):
            worker.batch = None

    def _retire(self, worker: _Worker, run: _Run, status: str, reason: str) -> None:
        """Kill ``worker``: a timed-out item gets ``timeout``; after a death the item is retried."""
        started = worker.ready
        replace = started
        if worker.batch is not None or not started:
            indices = worker.batch[1] if worker.batch is not None else []
            if not started:  # died, hung or unreachable while starting: no item is to blame
                rest = indices
                try:  # EOF may come a moment before the exit status
                    code = worker.proc.wait(timeout=1.0) if "died" in reason else worker.proc.poll()
                except subprocess.TimeoutExpired:
                    code = None
                killed = code is not None and code < 0  # by a signal from outside (OOM killer, kill -9)
                if not killed or time.monotonic() - run.began > STARTUP_TIMEOUT:
                    run.failed_starts += 1  # a worker that fails by itself (e.g. an import error)
                if "not ready" not in reason and run.failed_starts <= MAX_RETRIES:
                    replace = True
                elif not any(w.ready for w in self.workers if w is not worker):
                    if rest:
                        run.queue.appendleft(rest)
                    rest = []
                    tail = worker.stderr_tail() or "no stderr"
                    run.fail_queue(f"{reason} ({run.failed_starts} failed start-ups): {tail}")
            elif worker.position < 0:  # nothing was sent: re-queue the whole batch
                rest = indices
            elif status == "timeout":  # the answer's fault: it had its full deadline
                run.results[indices[worker.position]] = Result(False, "timeout", reason)
                rest = indices[worker.position + 1 :]
            else:  # the worker died on this item: the verifier's fault, check it again elsewhere
                index = indices[worker.position]
                run.deaths[index] = run.deaths.get(index, 0) + 1
                rest = indices[worker.position :]
                if run.deaths[index] > MAX_RETRIES:
                    tail = worker.stderr_tail() or "no stderr"
                    run.results[index] = Result(
                        False, "worker_error", f"{reason} on this item {run.deaths[index]} times ({tail})"
                    )
                    rest = indices[worker.position + 1 :]
            if rest:
                run.queue.appendleft(rest)
        worker.batch = None
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)
        if replace and (run.queue or started):
            self.workers.append(_Worker())  # start the replacement now: it imports while we wait
