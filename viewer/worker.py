"""One background thread that runs the newest job it was given, so slow work never queues up behind itself.

Used for browser updates during training (the training thread hands work over and never waits) and for renders
that follow the browser camera (only the latest camera matters; stale ones are dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("recon")


class LatestWorker:
    def __init__(self, name: str):
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._running = False
        self._closed = False
        self.busy_seconds = 0.0  # wall time spent in jobs so far
        self.last_seconds = 0.0  # wall time of the last finished job
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """No job running and none waiting."""
        with self._cond:
            return self._job is None and not self._running

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the current one; a job still waiting is replaced (it is stale by now)."""
        with self._cond:
            if self._closed:
                return
            self._job = job
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._job = None
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
                self._running = True
            t0 = time.perf_counter()
            try:
                job()
            except Exception:  # a failed browser update must not stop later ones (or training)
                log.exception("viewer: background job failed")
            finally:
                dt = time.perf_counter() - t0
                with self._cond:
                    self._running = False
                    self.last_seconds = dt
                    self.busy_seconds += dt
                    self._cond.notify_all()
