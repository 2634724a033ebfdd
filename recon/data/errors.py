"""The one exception type for user errors."""


class ReconError(Exception):
    """A user error: the message is one line saying what was wrong and what to do.

    The CLI prints it (no traceback) and exits with code 2. Internal failures use any other exception and exit 1.
    """


def os_error_line(err: OSError) -> str:
    """One line for an OSError on a user's path (a folder in the way, no permission, a full disk): the path, what
    the system said, and what to do; the CLI prints it like a ReconError."""
    path = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
    return f"{path}: {err.strerror or err}; check the path, its permissions and the free space"
