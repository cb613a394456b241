"""Interrupts end training at a round boundary, with a checkpoint from which the resume is exact.

The first SIGINT (Ctrl-C) or SIGTERM (what schedulers send on preemption) only records a request: the current
rollout round finishes (its prompts, updates and metrics are all kept), a checkpoint is saved at that boundary and
the run exits with 128 + the signal number (130, 143). Dropping the round instead would have to rewind the data
position and every RNG to the round's start; finishing it is what keeps the saved state identical to the one a
straight run has at the same step. Under several processes the request is all-reduced once per round, so every
process stops after the same round even when only one of them was signalled.

A second signal, a second or more after the first, raises :class:`KeyboardInterrupt` at once, without saving: the
newest complete checkpoint stays valid, because checkpoints are written to a temporary folder and renamed only when
complete. Signals within a second of the first are the same request: a Ctrl-C in a terminal reaches every
process of the group, and torchrun then forwards its own copy to its workers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAME_REQUEST_S = 1.0  # later signals within this many seconds of the first repeat it (see the module docstring)


class StopRequest:
    """Between ``install()`` and ``restore()`` (or inside ``with``), SIGINT/SIGTERM set :attr:`signal` instead of stopping the process."""

    def __init__(self) -> None:
        self.signal: int = 0  # the first signal received; 0: none
        self._first_at = 0.0  # time.monotonic() of the first signal
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal:
            if time.monotonic() - self._first_at < SAME_REQUEST_S:
                return
            log.warning("%s again: stopping now, without a checkpoint", signal.Signals(signum).name)
            raise KeyboardInterrupt
        self.signal, self._first_at = signum, time.monotonic()
        log.warning(
            "%s: stopping at the end of this round with a checkpoint (send it again to stop now, without one)",
            signal.Signals(signum).name,
        )
