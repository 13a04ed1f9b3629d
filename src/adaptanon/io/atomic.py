"""How adaptanon writes: files atomically with the user's umask, never through a symbolic
link; which write errors stop a run; one writer per output folder (:class:`FolderLock`)."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, old, or complete.

    The file gets mode ``0666 & ~umask``, like any file the user creates. If ``path`` is a
    symbolic link, the link itself is replaced, never the file it points to.
    """
    commit(write_temporary(path, data), path)


def write_temporary(path: Path, data: bytes | str) -> Path:
    """The first half of :func:`atomic_write`: ``data`` in a new hidden temporary file
    (``.NAME.XXXXXXXX.tmp``) next to ``path``, flushed to disk, with the final mode; its
    path. :func:`commit` puts it in place; a caller that does not must remove it."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """The second half of :func:`atomic_write`: the temporary file ``tmp`` replaces
    ``path`` (a symbolic link there is replaced itself); ``tmp`` is removed on failure."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


FATAL_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
    )
    if code is not None
)
"""Errors of the disk, not of one file: disk full, quota exceeded, read-only file system,
no permission, I/O error. Writing cannot go on after one of them."""


def is_fatal_write_error(exc: OSError) -> bool:
    """True when ``exc``, raised while writing, means no further write can succeed (see
    :data:`FATAL_ERRNOS`); other errors (a name too long, a folder in the way) concern one
    file only."""
    return exc.errno in FATAL_ERRNOS


def create_new(path: Path) -> int:
    """Create ``path`` afresh for writing and return its descriptor.

    Whatever ``path`` named before (a file, a symbolic link) is unlinked first, and the
    file is opened with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a symbolic link is replaced,
    never written through. The mode is ``0666 & ~umask``.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)


LOCK_NAME = ".adaptanon.lock"
"""The lock file a run holds in its output folder."""


class FolderLock:
    """One writer per folder: an exclusive, non-blocking ``flock`` on ``DIR/.adaptanon.lock``.

    The lock is the operating system's, so a run that crashes releases it; :meth:`release`
    also removes the file. Without ``fcntl`` (Windows) no lock is taken.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            BlockingIOError: another process holds it.
            OSError: the lock file cannot be created (e.g. a read-only folder).
        """
        if sys.platform == "win32":
            return
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            if self.path.is_symlink():
                self.path.unlink()
            fd = os.open(self.path, flags, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = os.fstat(fd)
                named = os.lstat(self.path)
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, FileNotFoundError):
                    continue  # the previous holder removed the file: lock the new one
                raise
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                self._fd = fd
                return
            os.close(fd)  # the file was replaced since it was opened: lock the current one

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing if not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the file stays, unlocked
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
