"""When to send the next splat refresh so that watching training costs it at most ``budget`` of its time.

A refresh costs the viewer's own time (the copy on the training thread plus the background conversion and
hand-over), and, when a browser runs on the same machine, whatever that browser spends receiving, sorting and
drawing the new splats, which no timer on this side sees. So the throttle also watches the training steps: from
the start of a refresh until ``settle`` seconds after its background part ends, it adds up how much longer the
steps took than the quiet ones (an exponential average of the step time while no refresh is under way). The
larger of the two, c, keeps the next refresh at least c·(1/budget − 1) seconds after that window: then refreshes
take at most ``budget`` of the wall time, whoever pays for them.
"""

from __future__ import annotations

import math
import threading


class RefreshThrottle:
    def __init__(self, budget: float = 0.05, settle: float = 1.0, ema: float = 0.05):
        self.budget, self.settle, self.ema = float(budget), float(settle), float(ema)
        self.quiet_step = float("nan")  # seconds per step with no refresh under way
        self.costs: list[float] = []  # effective cost of each finished refresh
        self._lock = threading.Lock()
        self._next_time = 0.0
        self._open = False  # a refresh window is under way
        self._own = 0.0
        self._excess = 0.0
        self._done_at: float | None = None

    def _space(self, cost: float, end: float) -> None:
        self._next_time = max(self._next_time, end + cost * (1.0 / self.budget - 1.0))

    def step(self, seconds: float, now: float) -> None:
        """Record one training step's wall time, ending at ``now``."""
        with self._lock:
            if not self._open:
                q = self.quiet_step
                self.quiet_step = seconds if not math.isfinite(q) else (1 - self.ema) * q + self.ema * seconds
                return
            if math.isfinite(self.quiet_step):
                self._excess += seconds - self.quiet_step
            if self._done_at is not None and now >= self._done_at + max(self.settle, 2.0 * self._own):
                cost = max(self._own, self._excess)
                self.costs.append(cost)
                self._space(cost, now)
                self._open = False

    def started(self, copy_seconds: float) -> None:
        """A refresh begins; ``copy_seconds`` were spent on the training thread."""
        with self._lock:
            self._open, self._own, self._excess, self._done_at = True, copy_seconds, 0.0, None

    def finished(self, seconds: float, end: float) -> None:
        """The refresh's background part took ``seconds`` and ended at ``end``."""
        with self._lock:
            self._own += seconds
            self._done_at = end

    def charge(self, seconds: float, end: float) -> None:
        """Other viewer work (panel numbers) that ended at ``end``: it delays the next refresh the same way."""
        with self._lock:
            self._space(seconds, end)

    def ready(self, now: float) -> bool:
        with self._lock:
            return not self._open and now >= self._next_time
