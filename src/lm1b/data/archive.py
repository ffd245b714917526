"""Safe extraction of the release tarball.

Every member is checked before anything is written, by rules that need no knowledge of the
filesystem: absolute paths and any `..` component are refused (in names and link targets
alike: `x/..` is not where it looks once `x` is a symbolic link), so is a path through a
symbolic link extracted earlier, a hard link to or through one, and a device or FIFO. The
release tarball holds only files and directories, so nothing legitimate is lost. Python's
`data` extraction filter is applied as well, and required: on a Python without it (before
3.10.12 / 3.11.4) the command refuses to extract rather than rely on our checks alone. The tree is extracted into a hidden temporary sibling and renamed into
place at the end, so a killed run never leaves a half tree under the final name.
"""

from __future__ import annotations

import gzip
import logging
import os
import platform
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

logger = logging.getLogger(__name__)

# What a damaged archive raises while being read (truncated gzip, bad CRC, garbage headers).
_CORRUPT_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
_STAGING_SUFFIX = ".extracting"


class ArchiveError(RuntimeError):
    """The tarball is unreadable, unsafe or lacks the expected tree; the message names it."""


def extract_tarball(tarball: Path, dest_dir: Path, top: str) -> Path:
    """Extract directory `top/` of `tarball` to `dest_dir/top` and return that path.

    `dest_dir/top` must not exist yet. Other top-level entries of the archive are dropped.
    """
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError(
            f"this Python ({platform.python_version()}) has no tarfile extraction filters; "
            "extracting an archive safely needs Python 3.10.12, 3.11.4, 3.12 or newer"
        )
    target = dest_dir / top
    _remove_stale_staging(dest_dir, top)
    staging = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=_STAGING_SUFFIX, dir=dest_dir))
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()
            check_members(members)
            _require_space(dest_dir, sum(m.size for m in members))
            logger.info("extracting %s (%d entries) into %s", tarball, len(members), dest_dir)
            progress = tqdm(members, desc="extract", unit="file", disable=None)
            tar.extractall(staging, members=progress, filter="data")
        if not (staging / top).is_dir():
            raise ArchiveError(f"{tarball} has no top-level directory {top}/")
        os.replace(staging / top, target)
    except tarfile.FilterError as exc:  # a TarError too: say what it is, not "unreadable"
        raise ArchiveError(
            f"{tarball}: Python's tarfile 'data' filter refused a member ({exc}); "
            "the archive is unsafe to extract"
        ) from exc
    except _CORRUPT_ARCHIVE_ERRORS as exc:
        raise ArchiveError(
            f"{tarball} is not a readable tarball ({exc}); delete it and retry"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_members(members: Iterable[tarfile.TarInfo]) -> None:
    """Raise ArchiveError on the first member that could write outside the extraction directory."""
    symlinks: set[str] = set()
    for member in members:
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            _refuse(member, "it is a device, FIFO or other special file")
        name = _inside(member.name, member)
        # Writing to or below a symlink extracted earlier would follow it wherever it points.
        if not symlinks.isdisjoint(_self_and_parents(name)):
            _refuse(member, "its path goes through a symbolic link")
        if member.issym():
            _inside(member.linkname, member)  # no absolute target, no `..`: it stays below
            symlinks.add(name)
        elif member.islnk():
            target = _inside(member.linkname, member)
            # A hard link to a symlink would link the symlink's (possibly outside) target.
            if not symlinks.isdisjoint(_self_and_parents(target)):
                _refuse(member, "it is a hard link through a symbolic link")


def _inside(path: str, member: tarfile.TarInfo) -> str:
    """`path` normalized, refusing absolute paths and any `..` component: normalizing
    `a/x/../b` to `a/b` is only right if `x` is not a symbolic link, which text cannot tell."""
    if posixpath.isabs(path) or ".." in PurePosixPath(path).parts:
        _refuse(member, "it points outside the extraction directory (absolute or '..')")
    return posixpath.normpath(path)


def _self_and_parents(name: str) -> set[str]:
    path = PurePosixPath(name)
    return {str(p) for p in (path, *path.parents)} - {"."}


def _refuse(member: tarfile.TarInfo, reason: str) -> None:
    raise ArchiveError(f"refusing to extract {member.name!r}: {reason}")


def _require_space(directory: Path, needed: int) -> None:
    """Fail before extracting rather than with a disk-full error halfway through."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise ArchiveError(
            f"extracting needs {needed / 1e9:.2f} GB but {directory} has {free / 1e9:.2f} GB free"
        )


def _remove_stale_staging(dest_dir: Path, top: str) -> None:
    """Delete temporary trees left by killed runs (each may hold gigabytes)."""
    for stale in dest_dir.glob(f".{top}.*{_STAGING_SUFFIX}"):
        logger.info("removing %s, left over by an interrupted extraction", stale)
        shutil.rmtree(stale, ignore_errors=True)
