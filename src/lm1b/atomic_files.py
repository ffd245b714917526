"""Whole-file rewrites that a crash cannot leave half done: write a temporary file beside the
target, flush and fsync it, then rename it over the target (a rename within one directory is
atomic). A kill at any moment leaves either the old file or the new one, never a truncated
mix; a failed write removes the temporary file and leaves the old file as it was."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomically(text: str, path: Path) -> None:
    """Replace `path`'s contents with `text` (UTF-8) in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as out:
        try:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            out.close()
            os.unlink(out.name)
            raise
    try:
        os.replace(out.name, path)
    except BaseException:
        os.unlink(out.name)
        raise


def write_json_atomically(report: dict, path: Path) -> None:
    """`report` as indented JSON at `path`, written by `write_text_atomically`."""
    write_text_atomically(json.dumps(report, indent=2) + "\n", path)
