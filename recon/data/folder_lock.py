"""One writer per output folder: a lock file holding the writer's PID while it writes.

Why a kernel lock and not only a PID file: ``flock`` is dropped by the kernel when the holder dies however it dies
(SIGKILL, a crash), so a stale file never blocks, a reused PID never blocks, and two writers never both win. The
PID in the file names the holder in the refusal and in the take-over message. Where the file system has no flock
(some network mounts), a file naming a live PID refuses instead.

``recon train`` locks its run folder (``RUN/.lock``, ``RunLock`` in run_folder.py); ``recon process`` locks the
scene folder it builds (``PARENT/.NAME.lock`` beside it, because the folder itself is replaced by a rename).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from .atomic import blocking_file
from .errors import ReconError

log = logging.getLogger("recon")


class FolderLock:
    """An exclusive lock on ``folder``, held through the file ``lock_path``; ``noun`` names the folder in
    messages ("run folder", "scene folder")."""

    def __init__(self, folder: str | Path, lock_path: str | Path, noun: str = "folder"):
        self.folder = Path(folder)
        self.path = Path(lock_path)
        self.noun = noun
        self._fd: int | None = None

    def _in_use(self, pid: int | None) -> ReconError:
        return ReconError(
            f"{self.noun} {self.folder} is in use by another recon process (PID {pid or 'unknown'}); wait for "
            "it to finish, stop it, or choose another --out"
        )

    def _open_locked(self) -> tuple[int, bool]:
        """The lock file's descriptor, flocked (True) or on a file system without flock (False)."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_pid(fd)
                os.close(fd)
                raise self._in_use(holder) from None
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return fd, False
                os.close(fd)
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the new one
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd, True
            except FileNotFoundError:
                pass
            os.close(fd)

    def acquire(self) -> FolderLock:
        """Take the lock (creating the lock file's folder), or a one-line ReconError naming the holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, flocked = self._open_locked()
        except OSError as e:
            blocker = blocking_file(self.path)
            why = f"{blocker} is a file, not a folder" if blocker else e.strerror
            raise ReconError(
                f"cannot write the {self.noun} {self.folder}: {why}; choose another --out"
            ) from None
        previous = read_pid(fd)
        if previous is not None and previous != os.getpid():
            if not flocked and pid_alive(previous):
                os.close(fd)
                raise self._in_use(previous)
            log.warning(
                f"{self.folder} was locked by PID {previous}, which has stopped; taking the lock over"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
