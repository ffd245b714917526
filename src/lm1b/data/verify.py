"""Checking an extracted tree against the expected MD5 of every shard.

A successful check is recorded in a marker file listing each verified file with its size and
modification time, so that a re-run can skip re-hashing ~4 GB when nothing has changed since.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tqdm import tqdm

BUNDLED_MD5SUMS = "lm1b_md5sums.txt"
CHUNK_SIZE = 1 << 20
# `md5sum` output: digest, a space, then ' ' (text mode) or '*' (binary mode), then the path.
_MD5SUM_LINE = re.compile(r"([0-9a-fA-F]{32}) [ *](.+)")
_MARKER_HEADER = "# verified by lm1b.download: md5 size mtime_ns path"


class ChecksumListError(ValueError):
    """A checksum list is malformed; the message names the file and line."""


@dataclass
class Report:
    """The outcome of `verify_tree`: shard paths (relative to `root`) by status."""

    root: Path
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (actual, expected)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.corrupt

    def summary(self) -> str:
        """A human summary: one count line, then one line per missing or corrupt shard."""
        total = len(self.ok) + len(self.missing) + len(self.corrupt)
        lines = [
            f"{self.root}: {len(self.ok)} of {total} shards OK, "
            f"{len(self.missing)} missing, {len(self.corrupt)} corrupt"
        ]
        lines += [f"  MISSING  {name}" for name in self.missing]
        lines += [
            f"  CORRUPT  {name} (md5 {actual}, expected {expected})"
            for name, (actual, expected) in self.corrupt.items()
        ]
        return "\n".join(lines)


def load_expected(path: Path | None = None) -> dict[str, str]:
    """Read an md5sum-style list (`#` comments allowed) into {relative path: lowercase md5}.

    Without `path`, the official list of the 150 tokenized LM1B shards bundled with the package.
    """
    if path is None:
        source = f"lm1b.data/{BUNDLED_MD5SUMS}"
        text = resources.files("lm1b.data").joinpath(BUNDLED_MD5SUMS).read_text("utf-8")
    else:
        source, text = str(path), path.read_text("utf-8")
    expected = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _MD5SUM_LINE.fullmatch(line.rstrip())
        if not match:
            raise ChecksumListError(f"{source}:{number}: not an 'md5  path' line: {line!r}")
        expected[match.group(2)] = match.group(1).lower()
    if not expected:
        raise ChecksumListError(f"{source} lists no files")
    return expected


def md5_of(path: Path) -> str:
    """The hex MD5 of a file, read in chunks so memory stays flat."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tree(root: Path, expected: Mapping[str, str]) -> Report:
    """Check that every expected file is under `root` with its expected MD5."""
    report = Report(root)
    names = sorted(expected)
    present = [name for name in names if (root / name).is_file()]
    report.missing = [name for name in names if not (root / name).is_file()]
    # hashlib releases the GIL on large buffers, so threads hash several shards at once.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = pool.map(lambda name: md5_of(root / name), present)
        for name, actual in zip(
            present, tqdm(digests, total=len(present), desc="md5", disable=None), strict=True
        ):
            if actual == expected[name]:
                report.ok.append(name)
            else:
                report.corrupt[name] = (actual, expected[name])
    return report


def write_marker(marker: Path, root: Path, expected: Mapping[str, str]) -> None:
    """Record that the files of `root` matched `expected` as they are now (atomically)."""
    lines = [_MARKER_HEADER]
    for name in sorted(expected):
        stat = (root / name).stat()
        lines.append(f"{expected[name]} {stat.st_size} {stat.st_mtime_ns} {name}")
    partial = marker.with_name(marker.name + ".tmp")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, marker)


def marker_is_current(marker: Path, root: Path, expected: Mapping[str, str]) -> bool:
    """True if `marker` covers exactly `expected` and no file changed size or mtime since."""
    try:
        recorded = _read_marker(marker)
    except (OSError, ValueError):
        return False  # absent or unreadable: verify again, which rewrites it
    if {name: md5 for name, (md5, _) in recorded.items()} != dict(expected):
        return False
    for name, (_, stamp) in recorded.items():
        try:
            stat = (root / name).stat()
        except OSError:
            return False
        if (stat.st_size, stat.st_mtime_ns) != stamp:
            return False
    return True


def _read_marker(marker: Path) -> dict[str, tuple[str, tuple[int, int]]]:
    """Parse a marker into {path: (md5, (size, mtime_ns))}; ValueError if malformed."""
    header, *lines = marker.read_text("utf-8").splitlines()
    if header != _MARKER_HEADER:
        raise ValueError(f"{marker} is not a verification marker")
    recorded = {}
    for line in lines:
        md5, size, mtime_ns, name = line.split(" ", 3)
        recorded[name] = (md5, (int(size), int(mtime_ns)))
    return recorded
