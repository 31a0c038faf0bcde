"""The config file as the settings page reads and saves it: its version, a lock, an atomic write.

Blocking file I/O, run in a worker thread (``trio.to_thread``) by ``admin.py``.

* A file's *version* is a hash of its bytes, so every process that reads the same file (the
  workers of ``rtcore serve --workers N``, an operator's editor) agrees on it without talking.
* A save holds an exclusive ``flock`` on the file from reading it (and checking the version
  the page loaded) to replacing it, so two saves, in one process or in two, never both start
  from the same version: the second sees the first one's file and its version no longer
  matches (409). The rename swaps the file's inode, so a lock taken on the old inode by a
  waiting saver is no lock on the new one: :func:`locked` checks, once it holds the lock,
  that the path still names the inode it locked, and starts over if not.
* The new text replaces the file's *target* (a symlinked config stays a symlink), with the
  old file's mode and, where the process may, its owner and group.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

LOCK_ATTEMPTS = 20
"""Times :func:`locked` starts over when the file was replaced while it waited."""
LOCK_WAIT = 10.0
"""Seconds a save waits for another save's lock (one takes milliseconds)."""


@attrs.frozen
class Snapshot:
    """The file's text and its version."""

    text: str
    version: str


class Unreadable(Exception):
    """The file cannot be read, or is not UTF-8: the message says which."""


def version_of(data: bytes) -> str:
    """The version of a file whose bytes are ``data`` (the page sends it back on save)."""
    return hashlib.sha256(data).hexdigest()[:32]


def read(path: Path) -> Snapshot:
    """The file's text and version.

    Raises:
        Unreadable: it cannot be read or decoded.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"{path} is not UTF-8 (byte {exc.start})") from exc
    return Snapshot(text, version_of(data))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` names (see the module docstring), waiting
    at most :data:`LOCK_WAIT` seconds for another holder.

    Raises:
        OSError: the file cannot be opened, or stayed locked (or kept being replaced).
    """
    for _ in range(LOCK_ATTEMPTS):
        fd = os.open(path, os.O_RDONLY)
        try:
            _flock(fd, path)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                yield
                return
        finally:
            os.close(fd)  # closing it releases the lock
    raise OSError(f"{path} kept being replaced while waiting to lock it")


def _flock(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(f"{path} stayed locked by another save for {LOCK_WAIT:g} s") from None
            time.sleep(0.01)  # a worker thread: the event loop goes on


def replace(path: Path, text: str) -> None:
    """Write ``text`` as the file's new content, atomically: readers see the old file or the
    new one, never a part (a temporary file beside the target, fsync, one rename).

    Raises:
        OSError: the directory is not writable, the disk is full, ...
    """
    target = path.resolve()  # a symlink stays one: its target is what changes
    old = target.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, old.st_mode & 0o7777)
        if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(PermissionError):  # only root may give a file away
                os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
