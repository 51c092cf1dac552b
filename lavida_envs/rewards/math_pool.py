"""Pool of math-verify worker subprocesses with hard per-check deadlines (parent side).

``WorkerPool(size).run(items, timeout) -> list[Result]``: each item is a list of
candidate (pred, gold) LaTeX pairs (see ``math_worker`` for the line protocol). Items
go out in batches (one JSON line per batch, amortising IPC) to up to ``size``
``subprocess.Popen`` workers, handed to whichever worker is idle. Each item gets
``timeout`` seconds from the moment its worker is ready for it (the reply to the
previous item); a worker that misses the deadline is killed, the item reports
``timeout``, a fresh worker starts at once, and the rest of its batch is re-queued.
A worker that dies reports ``parse_error`` for the item it was on; one that cannot
start within :data:`STARTUP_TIMEOUT` fails the remaining items with the reason.
POSIX only (``selectors`` on pipes).
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

__all__ = ["Result", "WorkerPool", "STARTUP_TIMEOUT"]

#: Seconds a fresh worker may take to import math-verify and report ready.
STARTUP_TIMEOUT = 60.0
#: Most items sent to one worker in one message.
MAX_BATCH = 16
_WORKER_FILE = str(Path(__file__).resolve().with_name("math_worker.py"))
# Load math_worker.py by path without importing the lavida_envs package (which pulls in
# gymnasium and numpy: slower start, more memory per worker); the '' entry that -c puts
# on sys.path is dropped first so nothing in the current directory can shadow a module.
_BOOT = (
    "import sys; sys.path.pop(0); import importlib.util as u; "
    "s = u.spec_from_file_location('lavida_math_worker', sys.argv[1]); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); sys.exit(m.main())"
)


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


class WorkerPool:
    """Up to ``size`` math workers owned by the process that made the pool."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.workers: list[_Worker] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one run at a time: replies are matched per worker

    def start(self, count: int | None = None) -> None:
        """Start workers up to ``count`` (default ``size``) and wait until they are ready."""
        want = min(self.size, count or self.size)
        while len(self.workers) < want:
            self.workers.append(_Worker())
        self.run([[("1", "1")]] * want, timeout=STARTUP_TIMEOUT)

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

    def run(self, items: list[list[tuple[str, str]]], timeout: float) -> list[Result]:
        """Check every item; never waits past the per-item deadlines."""
        with self._lock:
            return self._run(items, timeout)

    def _run(self, items: list[list[tuple[str, str]]], timeout: float) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        per = max(1, min(MAX_BATCH, -(-len(items) // (2 * self.size))))
        queue = deque(list(range(i, min(i + per, len(items)))) for i in range(0, len(items), per))
        self.workers = [w for w in self.workers if w.proc.poll() is None]
        while len(self.workers) < min(self.size, len(queue)):
            self.workers.append(_Worker())
        try:
            while queue or any(w.batch for w in self.workers):
                self._dispatch(queue, items, timeout, results)
                self._wait(queue, timeout, results)
        finally:
            for worker in [w for w in self.workers if w.batch is not None]:
                worker.kill()  # interrupted mid-batch: stale replies must never be read later
                self.workers.remove(worker)
        return [r if r is not None else Result(False, "timeout", "math check not run") for r in results]

    def _dispatch(self, queue: deque, items: list, timeout: float, results: list) -> None:
        for worker in self.workers:
            if worker.batch is None and queue:
                indices = queue.popleft()
                batch = next(self._ids)
                message = {"id": batch, "timeout": timeout, "items": [items[i] for i in indices]}
                worker.batch, worker.position = (batch, indices), 0
                if worker.ready:
                    worker.last_event = time.monotonic()
                if not worker.send(message):  # died while idle: no item is to blame
                    worker.position = -1
                    self._retire(worker, queue, results, "parse_error", "math worker exited")

    def _wait(self, queue: deque, timeout: float, results: list) -> None:
        busy = [w for w in self.workers if w.batch is not None]
        if not busy:
            return
        now = time.monotonic()
        wait = max(0.0, min(w.deadline(timeout) for w in busy) - now)
        with selectors.DefaultSelector() as selector:
            for worker in busy:
                selector.register(worker.fd, selectors.EVENT_READ, worker)
            events = selector.select(wait)
        for key, _ in events:
            worker = key.data
            messages = worker.read()
            if messages is None:
                self._retire(worker, queue, results, "parse_error", "math worker died")
                continue
            for message in messages:
                self._accept(worker, message, results)
        now = time.monotonic()
        for worker in [w for w in self.workers if w.batch is not None and now > w.deadline(timeout)]:
            if worker.ready:
                self._retire(worker, queue, results, "timeout", f"math check exceeded {timeout:g}s")
            else:
                self._retire(worker, queue, results, "timeout", f"math worker not ready in {STARTUP_TIMEOUT:g}s")

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

    def _retire(self, worker: _Worker, queue: deque, results: list, status: str, reason: str) -> None:
        """Kill ``worker``; its current item gets ``status``; the rest of its batch is re-queued."""
        started = worker.ready
        if worker.batch is not None:
            indices = worker.batch[1]
            rest = indices[worker.position + 1 :]
            if worker.position < 0:  # nothing was sent: re-queue the whole batch
                rest, failed = indices, []
            elif not started:  # cannot start: fail everything left rather than loop on restarts
                reason = f"{reason}: {worker.stderr_tail() or 'no stderr'}"
                rest, failed = [], indices[worker.position :] + [i for b in queue for i in b]
                queue.clear()
            else:
                failed = indices[worker.position : worker.position + 1]
                if status != "timeout":
                    reason = f"{reason} ({worker.stderr_tail() or 'no stderr'})"
            for index in failed:
                results[index] = Result(False, status, reason)
            if rest:
                queue.appendleft(rest)
        worker.batch = None
        worker.kill()
        self.workers.remove(worker)
        if started:
            self.workers.append(_Worker())  # start the replacement now: it imports while we wait
