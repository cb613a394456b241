"""Rewards of one's own: ``reward.function = path/to/file.py:name`` or ``package.module:name``.

The function is called as ``fn(response, answer, example)`` with the response text, the gold answer and a dict of
the example's other fields (``id``, ``problem``, ``choices``, ``source`` and its meta: ``level``, ``subject``, extra
columns of a user's dataset, ...) and, in training, the response's ``response_length`` (tokens) and ``truncated``
(cut at ``rollout.max_new_tokens``), and returns a float, or a dict of named float scores with a ``total`` key (the
reward; every named score is logged as ``reward/custom/<name>``, so no name can overwrite the trainer's own
``reward/*`` metrics). It runs in the verifier's worker processes under the same time and memory bound as the
verifier; a raise, a bad return value (a score that is not a number, or beyond float32's range, which the trainer
computes advantages in) or a timeout scores 0 and is counted, and the first error text is logged once. Before
training, the file is imported once in a separate process under the same time bound (``reward.timeout``): an
import that raises, calls ``sys.exit`` or hangs stops the run with one line. The built-in verifier is importable
inside it: ``from mm_gmpo.reward import verify, grade``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_gmpo.errors import UserError

KEY = "reward.function"


@dataclass(frozen=True)
class CustomScore:
    """One response's score from a user's reward function (``error`` non-empty: it failed and scored 0)."""

    total: float
    named: dict[str, float] = field(default_factory=dict)  # every score the function returned, ``total`` included
    error: str = ""


def _load_file(path: Path, spec: str):
    if not path.is_file():
        raise UserError(f"{KEY}={spec}: no such file {path}")
    module_name = f"mm_gmpo_user_reward_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"{KEY}={spec}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 (the user's file: any error is theirs to see, in one line)
        raise UserError(f"{KEY}={spec}: importing {path} failed ({type(exc).__name__}: {exc})") from exc
    sys.modules[module_name] = module
    return module


def load_reward_function(spec: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``file.py:name`` or ``module:name``), its signature checked.

    Raises :class:`UserError` naming ``reward.function`` and the problem (bad path or module, missing name, not
    callable, a signature that cannot take ``(response, answer, example)``).
    """
    location, sep, name = spec.strip().rpartition(":")
    if not sep or not location or not name.isidentifier():
        raise UserError(f"{KEY}={spec!r}: expected path/to/file.py:name or package.module:name")
    if location.endswith(".py") or "/" in location or "\\" in location:
        module = _load_file(Path(location).expanduser(), spec)
    else:
        try:
            module = importlib.import_module(location)
        except Exception as exc:  # noqa: BLE001 (ModuleNotFoundError, or anything the module raises)
            raise UserError(f"{KEY}={spec}: cannot import module {location} ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"{KEY}={spec}: {location} has no attribute {name!r}")
    if not callable(fn):
        raise UserError(f"{KEY}={spec}: {name} is not callable")
    try:
        inspect.signature(fn).bind("response", "answer", {})
    except TypeError as exc:
        raise UserError(
            f"{KEY}={spec}: {name}{inspect.signature(fn)} cannot be called as {name}(response, answer, example) ({exc})"
        ) from exc
    except ValueError:  # builtins without a signature: trust them
        pass
    return fn


def as_score(value: Any) -> CustomScore:
    """A function's return value -> :class:`CustomScore` (a bad value is an error scored 0)."""
    if isinstance(value, dict):
        if "total" not in value:
            return CustomScore(0.0, error=f"returned a dict without a 'total' key ({sorted(value)[:5]})")
        named = {}
        for key, score in value.items():
            number = _number(score)
            if number is None:
                return CustomScore(0.0, error=f"score {key!r} is {score!r}, {_not_a_score(score)}")
            named[str(key)] = number
        return CustomScore(named["total"], named)
    number = _number(value)
    if number is None:
        return CustomScore(0.0, error=f"returned {value!r}, {_not_a_score(value)} (or a dict with 'total')")
    return CustomScore(number, {"total": number})


SCORE_LIMIT = 3.4028234663852886e38  # float32's largest finite value: rewards become float32 for the advantages


def _number(value: Any) -> float | None:
    """A float within +-SCORE_LIMIT from a number (bool, int, float, numpy or torch scalar); None for anything
    else (see :func:`_not_a_score` for why)."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if abs(number) <= SCORE_LIMIT else None  # False for nan too


def _not_a_score(value: Any) -> str:
    """Why ``value`` is no score (for a value :func:`_number` refused)."""
    try:
        number = float(value) if not isinstance(value, (str, bytes)) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None:
        return "not a number"
    if not math.isfinite(number):
        return "not a finite number"
    return f"beyond the +-{SCORE_LIMIT:.4g} a reward can take (float32)"


def call_reward(fn: Callable[..., Any], response: str, answer: str, example: dict) -> CustomScore:
    """One call, any exception caught and reported as an error scored 0 (what the worker runs per item)."""
    try:
        return as_score(fn(response, answer, example))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 (one bad item must not stop training, nor sys.exit)
        return CustomScore(0.0, error=f"{type(exc).__name__}: {str(exc)[:200]}")


def example_fields(example, *, response_length: int | None = None, truncated: bool | None = None) -> dict:
    """The fields of an :class:`~mm_gmpo.types.Example` a reward function sees (no images: they stay in the
    trainer), and of the response when given: ``response_length`` (its tokens, end-of-turn included) and
    ``truncated`` (cut at ``rollout.max_new_tokens``). Meta entries come first and never replace these."""
    fields = {k: v for k, v in (example.meta or {}).items() if _picklable_scalar(v)}
    fields.update(id=example.id, problem=example.problem, choices=example.choices, source=example.source)
    if response_length is not None:
        fields["response_length"] = int(response_length)
    if truncated is not None:
        fields["truncated"] = bool(truncated)
    return fields


def _picklable_scalar(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_picklable_scalar(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _picklable_scalar(v) for k, v in value.items())
    return False


_START_SECONDS = 120.0  # a spawned process imports Python, mm_gmpo.reward and sympy before the clock starts


def check_reward_function(spec: str, timeout: float) -> None:
    """Import ``spec`` (:func:`load_reward_function`) once in a separate process, the import bounded by
    ``timeout`` seconds (``reward.timeout``, the bound of a call) once the process has started. Raises
    :class:`UserError` in one line for anything :func:`load_reward_function` refuses and for an import that
    calls ``sys.exit``, ends its process or hangs (the process and its process group are killed)."""
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_check_in_child, args=(child, spec), daemon=True)
    process.start()
    child.close()
    try:
        deadline = time.monotonic() + _START_SECONDS
        for expected in ("started", "result"):
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                if expected == "started":
                    raise UserError(f"{KEY}={spec}: the process that imports it did not start in {_START_SECONDS:g}s")
                raise UserError(
                    f"{KEY}={spec}: importing it took over reward.timeout={timeout:g}s (it hangs, or raise "
                    "reward.timeout)"
                )
            try:
                tag, payload = parent.recv()
            except (EOFError, OSError):
                process.join(timeout=5)
                raise UserError(
                    f"{KEY}={spec}: importing it ended the process (exit code {process.exitcode})"
                ) from None
            if tag == "error":
                raise UserError(payload)
            deadline = time.monotonic() + timeout  # the import itself: the bound of a call
    finally:
        parent.close()
        kill_process_group(process)


def _check_in_child(conn, spec: str) -> None:
    import os

    os.setpgid(0, 0)  # its own process group: a kill reaches whatever the import started
    import mm_gmpo.reward  # noqa: F401 (what a reward file is told to import; loaded before the clock starts)

    conn.send(("started", None))
    try:
        load_reward_function(spec)
    except UserError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 (sys.exit or anything else at import: one line for the user)
        what = f"exit code {exc.code}" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        conn.send(("error", f"{KEY}={spec}: importing it called sys.exit ({what})" if isinstance(exc, SystemExit)
                   else f"{KEY}={spec}: importing it failed ({what})"))  # fmt: skip
    else:
        conn.send(("ok", None))
    conn.close()


def kill_process_group(process) -> None:
    """Kill ``process`` (a multiprocessing process that made itself a process-group leader) and every process it
    started in its group; wait for it."""
    import os
    import signal

    if process.pid is not None:  # not (yet) a group leader, or the group is gone: nothing to do
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if process.is_alive():
        process.kill()
    process.join(timeout=5)
