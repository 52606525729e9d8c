"""One live process at a time in an output folder: :class:`OutputDirLock`, a lock file
``<folder>/fna_d2.lock`` held with ``fcntl.flock``.

The kernel releases a ``flock`` when its holder dies, however it dies (``kill -9``, out of
memory), so a lock that cannot be taken is held by a process that is still running, and one
that can be taken after its file still names a holder was left by a run that died: it is
taken over, and the takeover is logged. The file records the holder (pid, host, start time,
command) for the message that refuses a second run; a clean release empties it (the file
stays: removing it would let two processes lock two different files of the same name).

Where the file system has no ``flock`` (some network file systems answer ``ENOLCK`` /
``EOPNOTSUPP``), the recorded holder is checked instead: a pid alive on this host, or any
record from another host, counts as live.

Nothing here raises about the folder being busy: :meth:`OutputDirLock.try_acquire` says
whether it got the lock and :meth:`OutputDirLock.refusal` words the refusal, for the caller to
raise as its own error (``fna_d2.errors.OutputDirLockedError``).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

__all__ = ["LOCK_NAME", "LockHolder", "OutputDirLock", "lock_holder", "pid_alive"]

logger = logging.getLogger(__name__)

LOCK_NAME = "fna_d2.lock"
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a folder: what the lock file records."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def me(cls) -> "LockHolder":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"),
                   " ".join([os.path.basename(sys.executable)] + sys.argv))

    @classmethod
    def parse(cls, text: str) -> Optional["LockHolder"]:
        """The holder a lock file's text records (None: empty or unreadable)."""
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}: {self.command}"

    def alive(self) -> bool:
        """Alive as far as this host can tell: a live pid here, or a record from elsewhere."""
        return self.host != socket.gethostname() or pid_alive(self.pid)


def _read(path: str) -> Optional[LockHolder]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return LockHolder.parse(f.read())
    except OSError:
        return None


class OutputDirLock:
    """The lock of one output folder (created if needed). Re-entrant for its owner: nested
    :meth:`try_acquire` calls need as many :meth:`release` calls."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, LOCK_NAME)
        self._fd: Optional[int] = None
        self._depth = 0
        #: after a refused try_acquire: the live holder (None if its record was unreadable)
        self.holder: Optional[LockHolder] = None
        #: after a successful try_acquire: the dead holder whose lock was taken over, if any
        self.previous: Optional[LockHolder] = None
        #: the folder whose live holder refused it: this one, or an enclosing one
        self.held_dir = self.directory

    @property
    def held(self) -> bool:
        return self._depth > 0

    def try_acquire(self, enclosing: bool = False) -> bool:
        """Take the lock; False when another live process holds it (see :attr:`holder`).
        ``enclosing``: also refuse when a folder above this one is held (e.g. a training run
        into a stage folder of a running pipeline)."""
        if self._depth:
            self._depth += 1
            return True
        if enclosing:
            parent = os.path.dirname(self.directory)
            while parent and parent != os.path.dirname(parent):
                holder = lock_holder(parent)
                if holder is not None:
                    self.holder, self.held_dir = holder, parent
                    return False
                parent = os.path.dirname(parent)
        self.held_dir = self.directory
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _BUSY:
                os.close(fd)
                self.holder = _read(self.path)
                return False
            # no flock on this file system: trust the record instead
            logger.warning(f"cannot flock {self.path} ({e.strerror}); checking the pid it "
                           "records instead")
            rec = _read(self.path)
            if rec is not None and rec.pid != os.getpid() and rec.alive():
                os.close(fd)
                self.holder = rec
                return False
        self._fd, self._depth, self.holder = fd, 1, None
        self.previous = _read(self.path)
        if self.previous is not None:
            logger.warning(f"{self.directory}: taking it over from a run that ended without "
                           f"releasing it ({self.previous.describe()}); that process is no "
                           "longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(LockHolder.me())).encode(), 0)
        os.fsync(fd)
        return True

    def release(self) -> None:
        """Give the lock back (the last of nested acquisitions empties the file)."""
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def refusal(self, what: str = "another run") -> str:
        """The message for a refused :meth:`try_acquire`."""
        who = self.holder.describe() if self.holder else "its record is unreadable"
        note = ""
        if self.holder and not self.holder.alive():
            note = (f"; pid {self.holder.pid} has exited, but a process it started still "
                    "holds the lock")
        where = self.directory if self.held_dir == self.directory else \
            f"{self.directory} is inside {self.held_dir}, which"
        path = os.path.join(self.held_dir, LOCK_NAME)
        return (f"{where} is in use by {what} ({who}{note}; lock file {path}): wait for it to "
                "finish, or use another output folder")


def lock_holder(directory: str) -> Optional[LockHolder]:
    """The live holder of ``directory``'s lock, or None when no live process holds it (the
    check takes and drops the lock when it is free)."""
    path = os.path.join(os.path.abspath(directory), LOCK_NAME)
    if not os.path.isfile(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            return _read(path) or LockHolder(0, "?", "?", "unreadable lock record")
        rec = _read(path)
        return rec if rec is not None and rec.alive() else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
