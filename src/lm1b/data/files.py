"""Resolving the shard globs of the data config into files: the one place that does it.

Each of `data.train_files`, `data.valid_files`, `data.test_files` is a glob or a list of globs,
relative to `data.root` unless absolute. Every pattern must match at least one regular file,
otherwise FileNotFoundError names the field, the pattern and the root, so that a typo stops the
run at start-up (before any process group or model is built) instead of looping forever as the
original f-lm loader did. Policy for directories matched by a glob: they are skipped with a
warning; a pattern that matches only directories is an error like a pattern matching nothing.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def _as_patterns(patterns: str | Sequence[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def resolve_files(patterns: str | Sequence[str], root: str | Path, field: str) -> list[Path]:
    """Expand `patterns` under `root` into the matching regular files.

    Files keep the order of the patterns and, within a pattern, sorted name order; a file
    matched by two patterns is listed once. `field` (e.g. "data.train_files") names the config
    field in error messages.
    """
    root = Path(root)
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in _as_patterns(patterns):
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matches = sorted(Path(m) for m in glob.glob(full))
        directories = [m for m in matches if m.is_dir()]
        regular = [m for m in matches if m.is_file()]
        if directories:
            logger.warning(
                "%s=%r matches directories, which are skipped: %s",
                field,
                pattern,
                ", ".join(str(d) for d in directories[:5]),
            )
        if not regular:
            what = "only directories" if directories else "nothing"
            raise FileNotFoundError(
                f"no files match {field}={pattern!r} (under root {str(root)!r}; it matches {what})"
            )
        for path in regular:
            if path not in seen:
                seen.add(path)
                files.append(path)
    return files
