"""Safe extraction of the release tarball.

Every member is checked before anything is written: absolute paths, paths that climb out with
`..`, links whose target lies outside, paths through a link, and devices or FIFOs are refused.
Where tarfile has extraction filters (3.12, and security releases of 3.10/3.11) the `data`
filter is applied as well. The tree is extracted into a hidden temporary sibling and renamed into
place at the end, so a killed run never leaves a half tree under the final name.
"""

from __future__ import annotations

import gzip
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

logger = logging.getLogger(__name__)

# Our own checks run everywhere; the stdlib filter adds defence in depth where it exists.
_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
# What a damaged archive raises while being read (truncated gzip, bad CRC, garbage headers).
_CORRUPT_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
_STAGING_SUFFIX = ".extracting"


class ArchiveError(RuntimeError):
    """The tarball is unreadable, unsafe or lacks the expected tree; the message names it."""


def extract_tarball(tarball: Path, dest_dir: Path, top: str) -> Path:
    """Extract directory `top/` of `tarball` to `dest_dir/top` and return that path.

    `dest_dir/top` must not exist yet. Other top-level entries of the archive are dropped.
    """
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
            tar.extractall(staging, members=progress, **_FILTER)
        if not (staging / top).is_dir():
            raise ArchiveError(f"{tarball} has no top-level directory {top}/")
        os.replace(staging / top, target)
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
            _inside(posixpath.join(posixpath.dirname(member.name), member.linkname), member)
            symlinks.add(name)
        elif member.islnk():
            target = _inside(member.linkname, member)
            # A hard link to a symlink would link the symlink's (possibly outside) target.
            if not symlinks.isdisjoint(_self_and_parents(target)):
                _refuse(member, "it is a hard link through a symbolic link")


def _inside(path: str, member: tarfile.TarInfo) -> str:
    """`path` normalized, refusing absolute paths and paths that climb above the root."""
    normal = posixpath.normpath(path)
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
        _refuse(member, "it points outside the extraction directory")
    return normal


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
