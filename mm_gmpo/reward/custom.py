"""Rewards of one's own: ``reward.function = path/to/file.py:name`` or ``package.module:name``.

The function is called as ``fn(response, answer, example)`` with the response text, the gold answer and a dict of
the example's other fields (``id``, ``problem``, ``choices``, ``source`` and its meta: ``level``, ``subject``, extra
columns of a user's dataset, ...), and returns a float, or a dict of named float scores with a ``total`` key (the
reward; every named score is logged as ``reward/<name>``). It runs in the verifier's worker processes under the
same time and memory bound as the verifier; a raise, a bad return value or a timeout scores 0 and is counted.
The built-in verifier is importable inside it: ``from mm_gmpo.reward import verify, grade``.
"""

from __future__ import annotations

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
                return CustomScore(0.0, error=f"score {key!r} is {score!r}, not a finite number")
            named[str(key)] = number
        return CustomScore(named["total"], named)
    number = _number(value)
    if number is None:
        return CustomScore(0.0, error=f"returned {value!r}, not a finite number or a dict with 'total'")
    return CustomScore(number, {"total": number})


def _number(value: Any) -> float | None:
    """A finite float from a number (bool, int, float, numpy or torch scalar); None for anything else."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def call_reward(fn: Callable[..., Any], response: str, answer: str, example: dict) -> CustomScore:
    """One call, any exception caught and reported as an error scored 0 (what the worker runs per item)."""
    try:
        return as_score(fn(response, answer, example))
    except Exception as exc:  # noqa: BLE001 (one bad item must not stop training)
        return CustomScore(0.0, error=f"{type(exc).__name__}: {str(exc)[:200]}")


def example_fields(example) -> dict:
    """The fields of an :class:`~mm_gmpo.types.Example` a reward function sees (no images: they stay in the
    trainer). Meta entries come last and never replace the named fields."""
    fields = {k: v for k, v in (example.meta or {}).items() if _picklable_scalar(v)}
    fields.update(id=example.id, problem=example.problem, choices=example.choices, source=example.source)
    return fields


def _picklable_scalar(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_picklable_scalar(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _picklable_scalar(v) for k, v in value.items())
    return False
