"""Whole-file writes that a crash cannot leave half done: write `<name>.tmp` beside the target,
flush and fsync it, rename it over the target (a rename within one directory is atomic) and
fsync the directory so that the rename survives a power loss. A kill at any moment leaves
either the old file or the new one, never a truncated mix; a failed write removes the
temporary file and leaves the old file as it was. One writer per file is assumed (the run
directory's lock gives a trainer that)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def replace_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a binary file that then atomically becomes `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:  # also on KeyboardInterrupt: never leave a stray tmp behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text_atomically(text: str, path: Path) -> None:
    """Replace `path`'s contents with `text` (UTF-8, newlines as given)."""
    replace_atomically(path, lambda file: file.write(text.encode("utf-8")))


def write_json_atomically(report: dict, path: Path) -> None:
    """`report` as indented JSON at `path`."""
    write_text_atomically(json.dumps(report, indent=2) + "\n", path)


def free_space(directory: Path) -> str:
    """How much the disk holding `directory` has free, for an error message (a full disk
    makes torch.save fail with an error that does not say so)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:,.1f} MiB free on its disk"


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; without it a power loss can undo the rename."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; the file itself is synced
        logger.warning("could not fsync directory %s: %s", directory, exc)
