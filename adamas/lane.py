"""The model's lane: one generation at a time, served in arrival order, with a bounded number waiting.

A lock alone serves waiters in no particular order and cannot tell one how many runs are ahead
of it; the lane can, so a waiting page says why it waits, and a full lane refuses at once.
"""

from __future__ import annotations

import threading
from collections import deque

MAX_WAITING = 8
"""Runs that may wait behind the one on the model; more are refused as busy."""


class Busy(RuntimeError):
    """The model cannot take this run now; the message says why and what to do."""


class Lane:
    """A first-come, first-served turn on the model: join(), wait() until 0 runs are ahead, leave() when done."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be an int >= 0, got {max_waiting!r}")
        self.max_waiting = max_waiting
        self._turns: deque[object] = deque()  # [0] holds the model
        self._changed = threading.Condition()

    def join(self) -> object:
        """A place at the back of the lane (a token for wait and leave); Busy when `max_waiting` already wait."""
        with self._changed:
            if len(self._turns) > self.max_waiting:
                raise Busy(
                    f"The model is busy: {len(self._turns)} runs are ahead of yours, the most this app lets wait. "
                    "Try again in a few minutes."
                )
            turn = object()
            self._turns.append(turn)
            return turn

    def wait(self, turn: object, timeout: float) -> int:
        """Wait up to `timeout` seconds for `turn` to reach the model; the runs still ahead of it (0: its turn)."""
        with self._changed:
            self._changed.wait_for(lambda: self._turns[0] is turn, timeout)
            return self._turns.index(turn)

    def leave(self, turn: object) -> None:
        """Give up the place (or the model), letting the next run in."""
        with self._changed:
            self._turns.remove(turn)
            self._changed.notify_all()

    def __len__(self) -> int:
        """Runs on the model or waiting for it."""
        with self._changed:
            return len(self._turns)
