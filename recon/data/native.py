"""Native libraries that change process-wide state on import, imported here with that state put back.

pycolmap initialises glog, whose failure handler takes over SIGTERM: a plain ``kill`` (a container stop, a job
scheduler's time limit) then prints a native stack trace instead of ending the process quietly or reaching the
Python handler (``recon train`` saves a checkpoint on SIGTERM). Import pycolmap from here, never directly.
The handler stays on the crash signals (SIGSEGV, SIGABRT, ...), where a native stack is useful.
"""

from __future__ import annotations

import signal

_USER_SIGNALS = (signal.SIGTERM,)

_before = {s: signal.getsignal(s) for s in _USER_SIGNALS}

import pycolmap  # noqa: E402  (installs glog's failure handler)

for _sig, _handler in _before.items():
    try:
        signal.signal(_sig, signal.SIG_DFL if _handler is None else _handler)
    except ValueError:  # imported outside the main thread: cannot touch handlers; glog's stays
        pass

__all__ = ["pycolmap"]
