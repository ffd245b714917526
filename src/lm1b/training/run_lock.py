"""One trainer per run directory: an exclusive lock on `<run_dir>/.lock`, held by rank 0.

Two trainers in one directory (the same command started twice) would interleave their
metrics, delete each other's temporary checkpoint files and overwrite each other's
checkpoints. The lock is an `fcntl.flock` on an open file: the kernel releases it when the
holding process ends in any way, `kill -9` included, so a crash never leaves a stale lock; the
file itself stays (deleting it would let two processes lock two different files) and records
who holds it, for the error message of the next one. Under torchrun only rank 0 locks: one
holder per job. On a shared filesystem the lock reaches other machines where the filesystem
supports flock (NFSv4 and Lustre with `flock` mounts do).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunDirectoryInUse(RuntimeError):
    """Another live process holds the run directory's lock; the message names it."""


class RunDirectoryLock:
    """`with RunDirectoryLock(run_dir):` holds the directory for the block, or raises
    RunDirectoryInUse at once (it never waits)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None

    def __enter__(self) -> RunDirectoryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read(500).strip() or "another process"
            file.close()
            raise RunDirectoryInUse(
                f"run directory {self.path.parent} is in use by {holder} (lock {self.path}); "
                "wait for it to finish, stop it, or pass another hydra.run.dir"
            ) from None
        file.seek(0)
        file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(sys.argv)[:200]
        file.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})")
        file.flush()
        self._file = file
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
