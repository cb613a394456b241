"""Grading in worker processes with a hard per-item time bound and a memory bound.

Why processes: sympy calls cannot be interrupted from inside Python in a thread (``signal.alarm`` only works in
the main thread of the main interpreter), and a hostile answer can take any amount of time or memory. Each worker
grades one item at a time; the parent waits on the workers' pipes with a deadline per item, and a worker that
overruns is killed and replaced (its item graded ``timeout``); one that dies (memory limit, crash) is replaced
(its item graded ``error``). With ``reward_function`` (``reward.function``, see :mod:`mm_gmpo.reward.custom`) the
same workers also run a user's reward function under the same bounds (``score_batch``). Workers start with the "spawn" method, so the pool works from threads and inside
torch.distributed worker processes (no fork of a process holding CUDA/NCCL/gloo state). Results come back in
input order.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from mm_gmpo.reward.graders import check_grader, extracted_answer, grader_path
from mm_gmpo.reward.grading import Grade

logger = logging.getLogger(__name__)

_STARTUP_SECONDS = 120.0  # a spawned worker imports sympy and the LaTeX parser before it is ready
_MAX_START_FAILURES = 5


def _worker_main(conn: Connection, memory_mb: int, grader: str, reward_function: str = "") -> None:
    """Worker loop: import, warm up, bound the address space, then grade (or score) items until told to stop."""
    import gc
    import importlib
    import os
    import signal

    os.setpgid(0, 0)  # its own process group: a kill (timeout, close) also ends what a reward function started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so is a scheduler's SIGTERM (workers stop by message or kill)
    from mm_gmpo.reward.symbolic import warm_up

    module, _, name = grader.partition(":")
    grade = getattr(importlib.import_module(module), name)
    custom, custom_error = None, ""
    if reward_function:  # imported before the memory bound, like the verifier (checked in the parent already)
        from mm_gmpo.reward.custom import load_reward_function

        try:
            custom = load_reward_function(reward_function)
        except BaseException as exc:  # noqa: BLE001 (sys.exit too: reported per item, scored 0)
            custom_error = str(exc) or type(exc).__name__

    warm_up()  # warm the parser before the clock of any real item starts
    getattr(importlib.import_module(module), "warm_up", lambda: None)()  # and the grader's own (official: math_verify)
    gc.collect()
    gc.freeze()  # what start-up built (modules, parser tables) is never scanned again: a full collection took 50 ms
    if memory_mb > 0:
        import resource

        limit = memory_mb * 2**20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, kind, response, gold, extra = message
        if kind == "score":
            if not _score_item(conn, index, custom, custom_error, response, gold, extra):
                return
            continue
        try:
            result = grade(response, gold, choices=extra)
        except MemoryError:
            result = Grade(False, None, "error", f"memory limit ({memory_mb} MB) reached")
        except RecursionError:
            result = Grade(False, None, "error", "expression too deeply nested")
        except Exception as exc:  # noqa: BLE001 (one bad item must not stop the worker)
            result = Grade(False, None, "error", f"{type(exc).__name__}: {str(exc)[:200]}")
        try:
            conn.send((index, result))
        except (OSError, ValueError):
            return


def _score_item(conn: Connection, index: int, fn, load_error: str, response, gold, example) -> bool:
    """Run the user's reward function on one item and send its :class:`CustomScore`; False if the pipe is gone.
    ``call_reward`` turns any exception (MemoryError at the bound included) into an error scored 0."""
    from mm_gmpo.reward.custom import CustomScore, call_reward

    result = CustomScore(0.0, error=load_error or "no reward function") if fn is None else None
    result = result or call_reward(fn, response, gold, example)
    try:
        conn.send((index, result))
    except (OSError, ValueError):
        return False
    return True


def _failed(kind: str, method: str, reason: str, extracted: str | None = None):
    """The result of an item whose worker overran (``timeout``) or died (``error``)."""
    if kind == "score":
        from mm_gmpo.reward.custom import CustomScore

        return CustomScore(0.0, error=f"{method}: {reason}")
    return Grade(False, extracted, method, reason)


class _Worker:
    def __init__(self, ctx, memory_mb: int, grader: str, reward_function: str = ""):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, memory_mb, grader, reward_function), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.item: int | None = None
        self.kind = "grade"  # of the item in progress: grade (the verifier) or score (reward.function)
        self.response = ""  # of the item in progress (a timed-out item still reports what it extracted)
        self.deadline = 0.0

    def kill(self) -> None:
        """Kill the worker and its process group (what a reward function started in it), then wait for it."""
        from mm_gmpo.reward.custom import kill_process_group

        kill_process_group(self.process)
        self.conn.close()


class VerifierPool:
    """``grade_batch`` with at most ``timeout`` seconds and ``memory_mb`` of address space per item, graded by the
    grader ``extraction`` names (lenient | official | easyr1, :mod:`mm_gmpo.reward.graders`).

    Thread-safe (one batch at a time); workers start on first use and live until ``close``.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 1.0,
        memory_mb: int = 1024,
        *,
        reward_function: str = "",
        extraction: str = "lenient",
        _grader: str = "",
    ):
        if workers < 1 or timeout <= 0:
            raise ValueError(f"VerifierPool needs workers >= 1 and timeout > 0, got {workers}, {timeout}")
        self.workers, self.timeout, self.memory_mb = workers, timeout, memory_mb
        # "module:function" run in the workers: the grader of reward.extraction (tests substitute a slow one)
        check_grader(extraction)
        self._grader = _grader or grader_path(extraction)
        self.extraction = extraction  # reward.extraction: which grader decides (mm_gmpo.reward.graders)
        self.reward_function = reward_function  # reward.function spec for score_batch; empty: none
        self._ctx = mp.get_context("spawn")
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failures = 0
        self.timeouts = 0  # items graded "timeout" since the pool started
        self.errors = 0  # items graded "error"
        self.function_errors = 0  # score_batch items that raised, returned a bad value, overran or died
        self._error_shown = False  # the first failing score_batch item's error text is logged, once

    @classmethod
    def from_reward_config(cls, reward, workers: int | None = None) -> VerifierPool:
        """The pool a ``RewardConfig`` (the config's ``reward`` section) asks for: its grader, time and memory
        bounds, reward function, and ``workers`` (default ``reward.workers``) worker processes."""
        return cls(
            workers=reward.workers if workers is None else workers,
            timeout=reward.timeout,
            memory_mb=reward.memory_mb,
            reward_function=reward.function,
            extraction=reward.extraction,
        )

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers (politely, then by force)."""
        with self._lock:
            for worker in self._pool:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
            deadline = time.monotonic() + 2.0
            for worker in self._pool:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
                worker.kill()
            self._pool = []

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool[self._pool.index(worker)] = _Worker(self._ctx, self.memory_mb, self._grader, self.reward_function)

    def grade_batch(
        self,
        responses: Sequence[str],
        golds: Sequence[str],
        choices: Sequence[list[str] | None] | None = None,
    ) -> list[Grade]:
        """Grade ``responses[i]`` against ``golds[i]`` (with ``choices[i]`` when given); results in order."""
        if len(responses) != len(golds) or (choices is not None and len(choices) != len(golds)):
            raise ValueError(
                f"grade_batch: {len(responses)} responses, {len(golds)} golds"
                + (f", {len(choices)} choice lists" if choices is not None else "")
            )
        items = [
            (i, "grade", *_texts(r, g), None if not choices else choices[i])
            for i, (r, g) in enumerate(zip(responses, golds, strict=True))
        ]
        with self._lock:
            return self._run(items)

    def score_batch(self, responses: Sequence[str], golds: Sequence[str], examples: Sequence[dict]) -> list:
        """``reward_function(responses[i], golds[i], examples[i])`` per item, bounded like grading; results in
        order as :class:`~mm_gmpo.reward.custom.CustomScore` (a failure scores 0 and counts in
        ``function_errors``)."""
        if not self.reward_function:
            raise ValueError("score_batch needs a VerifierPool built with reward_function")
        if not len(responses) == len(golds) == len(examples):
            raise ValueError(f"score_batch: {len(responses)} responses, {len(golds)} golds, {len(examples)} examples")
        items = [
            (i, "score", *_texts(r, g), dict(e))
            for i, (r, g, e) in enumerate(zip(responses, golds, examples, strict=True))
        ]
        with self._lock:
            results = self._run(items)
        self.function_errors += sum(bool(r.error) for r in results)
        first = next((r.error for r in results if r.error), "")
        if first and not self._error_shown:
            self._error_shown = True
            logger.warning("reward.function failed (scored 0; first error, shown once): %s", first)
        return results

    def _run(self, items: list[tuple]) -> list:
        results: list = [None] * len(items)
        pending = collections.deque(items)
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self._ctx, self.memory_mb, self._grader, self.reward_function))
        while pending or any(w.item is not None for w in self._pool):
            for worker in self._pool:
                if worker.ready and worker.item is None and pending:
                    item = pending.popleft()
                    worker.item, worker.kind, worker.response = item[0], item[1], item[2]
                    worker.deadline = time.monotonic() + self.timeout
                    worker.conn.send(item)
            busy = [w for w in self._pool if w.item is not None]
            now = time.monotonic()
            wait_for = min((w.deadline for w in busy), default=now + 1.0) - now
            for conn in wait([w.conn for w in self._pool], timeout=max(0.0, wait_for)):
                worker = next(w for w in self._pool if w.conn is conn)
                self._receive(worker, results)
            self._enforce_deadlines(results)
        return [r if r is not None else _failed(items[i][1], "error", "no result") for i, r in enumerate(results)]

    def _receive(self, worker: _Worker, results: list) -> None:
        try:
            tag, payload = worker.conn.recv()
        except (EOFError, OSError) as exc:
            if worker.item is not None:
                results[worker.item] = _failed(worker.kind, "error", "verifier worker died (memory limit or crash)")
                self.errors += worker.kind == "grade"
            elif not worker.ready:
                self._start_failures += 1
                if self._start_failures > _MAX_START_FAILURES:
                    raise RuntimeError("verifier workers fail to start; run `mm-gmpo verify 1 1` to see why") from exc
            self._replace(worker)
            return
        if tag == "ready":
            worker.ready = True
            self._start_failures = 0
            return
        if worker.item == tag:
            results[tag] = payload
            self.errors += worker.kind == "grade" and payload.method == "error"
            worker.item = None

    def _enforce_deadlines(self, results: list) -> None:
        now = time.monotonic()
        for worker in list(self._pool):
            if worker.item is not None and now >= worker.deadline:
                logger.debug("verifier item %d over %.2fs: worker replaced", worker.item, self.timeout)
                grading = worker.kind == "grade"
                extracted = extracted_answer(self.extraction, worker.response) if grading else None
                reason = f"over the {self.timeout:g}s time bound"
                results[worker.item] = _failed(worker.kind, "timeout", reason, extracted)
                self.timeouts += worker.kind == "grade"
                self._replace(worker)
            elif not worker.ready and now - worker.started > _STARTUP_SECONDS:
                raise RuntimeError(f"a verifier worker did not start within {_STARTUP_SECONDS:.0f}s")


def _texts(response, gold) -> tuple[str, str | list[str]]:
    """The response as text; the gold as text, or a list gold (official evaluation sets) as a list of texts."""
    if isinstance(gold, list | tuple):
        return (str(response) if response is not None else "", [str(g) for g in gold])
    return (str(response) if response is not None else "", str(gold) if gold is not None else "")
