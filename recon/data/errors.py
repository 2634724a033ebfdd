"""The one exception type for user errors."""


class ReconError(Exception):
    """A user error: the message is one line saying what was wrong and what to do.

    The CLI prints it (no traceback) and exits with code 2. Internal failures use any other exception and exit 1.
    """
