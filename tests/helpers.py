"""Small helpers shared by tests in several folders."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` for a child process that a test stops with Ctrl-C (``proc.send_signal(signal.SIGINT)``).

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across fork and exec
    (``restore_signals`` only resets SIGPIPE, SIGXFZ and SIGXFSZ). Python then installs no KeyboardInterrupt
    handler, so the child would never see the test's Ctrl-C. This restores the default disposition in the child,
    before exec; the child's Python then installs its usual handler.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
