"""Atomic file writing: a crash never leaves a half-written file under its final name.

A write goes to a temporary file beside the target (``.NAME.XXXXXXXX.SUFFIX.tmp.SUFFIX``) and is renamed onto it.
A process killed mid-write (SIGKILL, power loss) leaves that temporary file behind; ``remove_stale_temporaries``
deletes them when the next writer of the folder starts (it holds the folder's lock, so none is live).
Failures of the file system on the target (a folder in the way, no permission, a full disk) are user errors:
one ReconError line naming the target, not a traceback naming a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ReconError

# mkstemp's 8 random characters between the stem and the suffix, as ``atomic_path`` names its files
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(?P<suffix>(?:\.[^./]*)?)\.tmp(?P=suffix)$")
# errors of the file system, not of the code: reported in one line naming the target
_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def cannot_write(path: str | os.PathLike, e: OSError) -> ReconError:
    """The one-line error for an OSError met while writing ``path``."""
    path = Path(path)
    blocker = blocking_file(path)
    if blocker is not None:
        return ReconError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    return ReconError(
        f"cannot write {path}: {e.strerror or e}; choose another path, or free space / fix permissions"
    )


def blocking_file(path: Path) -> Path | None:
    """The regular file standing where a folder above ``path`` should be (``--out afile/run``), if any."""
    return next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)


def _check_target(final: Path) -> None:
    if final.is_dir():
        raise ReconError(f"{final} is a folder; give a file name (a new one, or a file to replace)")


def check_output_file(path: str | os.PathLike) -> None:
    """Refuse an output file path that cannot be written (a folder in the way, a file where a folder should be)
    before the work that produces it, not after."""
    final = Path(path)
    _check_target(final)
    blocker = blocking_file(final)
    if blocker is not None:
        raise ReconError(f"cannot write {final}: {blocker} is a file, not a folder; choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error it is removed.

    The temporary name keeps the final suffix so libraries that pick a format by extension still work.
    """
    final = Path(path)
    _check_target(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=final.suffix + ".tmp" + final.suffix, dir=final.parent
        )
    except OSError as e:
        raise cannot_write(final, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:
            if e.errno in _ENVIRONMENT:
                raise cannot_write(final, e) from None
            raise
        try:
            if tmp_path.exists():  # mkstemp creates 0600; give the file the permissions a plain open() would
                umask = os.umask(0)
                os.umask(umask)
                tmp_path.chmod(0o666 & ~umask)
            os.replace(tmp_path, final)
        except OSError as e:
            raise cannot_write(final, e) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of an ``atomic_path`` write."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(folder: str | os.PathLike, skip: tuple[str, ...] = (".cache",)) -> list[Path]:
    """Delete the temporary files of killed atomic writes under ``folder`` (not inside folders named in ``skip``:
    caches other processes may be writing); returns what was removed. Call it holding the folder's lock."""
    removed: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            if is_temporary(name):
                path = Path(root) / name
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed
