"""Training progress and schedules that follow either a step count or a wall-time budget.

Every schedule (learning-rate decay, densification window, SH degree) is a function of *progress* in [0, 1]. With a
step count, progress = step / steps. With a time budget, progress = elapsed / budget, and the "nominal step"
(progress × train.steps) stands in for the step number wherever a schedule or gsplat strategy wants one.
"""

from __future__ import annotations

import math


class Clock:
    """Progress of a training run, by steps or by wall time."""

    def __init__(self, steps: int, time_budget: float | None = None):
        self.steps = int(steps)
        self.time_budget = time_budget

    def progress(self, step: int, elapsed: float) -> float:
        if self.time_budget:
            return min(1.0, elapsed / self.time_budget)
        return min(1.0, step / self.steps)

    def done(self, step: int, elapsed: float) -> bool:
        return self.progress(step, elapsed) >= 1.0

    def nominal_step(self, step: int, elapsed: float) -> int:
        if self.time_budget:
            return int(self.progress(step, elapsed) * self.steps)
        return step


def exp_decay(start: float, end: float, progress: float) -> float:
    """Log-linear interpolation from ``start`` to ``end`` (the 3DGS position learning-rate schedule)."""
    progress = min(max(progress, 0.0), 1.0)
    return math.exp(math.log(start) * (1 - progress) + math.log(end) * progress)


def sh_degree_at(progress: float, max_degree: int, interval: float) -> int:
    """Active SH degree: one more every ``interval`` of training, up to ``max_degree``."""
    if interval <= 0:
        return max_degree
    return min(max_degree, int(progress / interval))


class PeriodicStep:
    """Maps nominal steps to the step numbers handed to gsplat strategies so periodic events fire once per period.

    Under a time budget the nominal step can jump over a multiple of the period, or repeat one; gsplat tests
    ``step % every == 0``. This hands over the crossed multiple exactly once and a non-multiple otherwise; with a
    plain step count (nominal = step, increasing by one) it is the identity.
    """

    def __init__(self, period: int):
        self.period = max(1, int(period))
        self.prev = -1

    def __call__(self, nominal: int) -> int:
        multiple = (nominal // self.period) * self.period
        crossed = self.prev < multiple <= nominal and (multiple > 0 or nominal == 0)
        self.prev = max(self.prev, nominal)
        if crossed:
            return multiple
        if nominal % self.period == 0:
            return nominal + 1
        return nominal

    def state_dict(self) -> dict:
        return {"prev": self.prev}

    def load_state_dict(self, state: dict) -> None:
        self.prev = int(state["prev"])
