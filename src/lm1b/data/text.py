"""Reading LM1B shards: one sentence per line, tokens separated by single spaces.

This is the one place that knows how a shard's bytes become lines and tokens; every reader
(vocabulary builder, tokenizer trainer, training stream, evaluation stream) goes through
`read_lines` / `read_sentences`, so all of them see exactly the same sentences.

Policies for bad input (each has a test in tests/data/test_text.py):

- lines are split on b"\\n" only; one trailing b"\\r" (CRLF files) and a UTF-8 BOM at the
  start of the file are removed; a last line without a newline is read like any other;
- empty and whitespace-only lines are skipped and not counted as sentences or words;
- invalid UTF-8 bytes are replaced by U+FFFD and counted (`ReadStats.decode_errors`), with a
  warning naming the file and line;
- NUL bytes (the mark of a zero-filled region left by an interrupted copy) are deleted and
  counted (`ReadStats.nul_lines`), with a warning naming the file and line;
- memory is bounded per line: at most `max_line_tokens * BYTES_PER_TOKEN` bytes of a line are
  read (`UNBOUNDED_LINE_BYTES` when there is no token limit); a longer line is cut at its last
  space before that bound, the rest of it is skipped without being stored, and the line is
  then truncated to `max_line_tokens` tokens; both count as `ReadStats.truncated_lines` with a
  warning. A line whose first `bound` bytes hold no space at all is skipped.
- tokens are split on ' ' only (not `str.split()`, which would drop tokens such as U+0092).

Warnings are limited to `MAX_WARNINGS_PER_FILE` per file, followed by one summary line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"
BYTES_PER_TOKEN = 64  # byte bound per line = max_line_tokens * this
UNBOUNDED_LINE_BYTES = 1 << 26  # 64 MiB: the byte bound when no token limit is given
MAX_WARNINGS_PER_FILE = 5
WHOLE_FILE_BYTES = 1 << 28  # `read_shard` reads files up to 256 MiB at once (LM1B: ~40 MB)


@dataclass
class ReadStats:
    """What the reader saw and repaired; pass one to `read_lines` to sum over files."""

    sentences: int = 0  # lines yielded
    blank_lines: int = 0  # empty or whitespace-only lines skipped
    decode_errors: int = 0  # lines with invalid UTF-8 (bytes replaced by U+FFFD)
    nul_lines: int = 0  # lines from which NUL bytes were deleted
    truncated_lines: int = 0  # lines cut to the byte or token bound


def split_tokens(line: str) -> list[str]:
    """Split on single spaces exactly as the corpus is tokenized.

    `str.split()` would also split on (and drop) characters such as U+0092 or U+00A0 that are
    tokens of the corpus, so split on ' ' and drop only the empty strings of repeated spaces.
    """
    return [token for token in line.split(" ") if token]


class _LineCleaner:
    """Turns one raw line of one file into a normalized str (or None), counting repairs."""

    def __init__(self, path: Path, max_line_tokens: int | None, stats: ReadStats) -> None:
        self.path = path
        self.max_line_tokens = max_line_tokens
        self.stats = stats
        self.num_warnings = 0

    def warn(self, line_number: int, message: str, *args: object) -> None:
        self.num_warnings += 1
        if self.num_warnings <= MAX_WARNINGS_PER_FILE:
            logger.warning("%s:%d: " + message, self.path, line_number, *args)

    def finish(self) -> None:
        hidden = self.num_warnings - MAX_WARNINGS_PER_FILE
        if hidden > 0:
            logger.warning("%s: %d more warnings like the above were not shown", self.path, hidden)

    def clean(self, line_number: int, raw: bytes) -> str | None:
        """The line with single spaces between its tokens, or None for a blank line."""
        if b"\0" in raw:
            raw = raw.replace(b"\0", b"")
            self.stats.nul_lines += 1
            self.warn(line_number, "NUL bytes deleted")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            self.stats.decode_errors += 1
            self.warn(line_number, "invalid UTF-8 replaced by U+FFFD")
        # Fast path: a corpus line already has single spaces and no space at either end.
        if "  " in line or line.startswith(" ") or line.endswith(" "):
            line = " ".join(split_tokens(line))
        if not line or line.isspace():
            self.stats.blank_lines += 1
            return None
        limit = self.max_line_tokens
        if limit is not None and line.count(" ") >= limit:
            self.stats.truncated_lines += 1
            self.warn(line_number, "line truncated to %d tokens", limit)
            line = " ".join(line.split(" ", limit)[:limit])
        self.stats.sentences += 1
        return line


def _bounded_lines(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Yield (line without its newline, whether it was cut), reading at most `max_bytes` of a
    line into memory; the rest of an over-long line is read in chunks and dropped."""
    while True:
        raw = handle.readline(max_bytes)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw[:-1], False
            continue
        skipped = 0
        while len(raw) == max_bytes:  # maybe cut: drop the rest of the line
            rest = handle.readline(max_bytes)
            skipped += len(rest.rstrip(b"\n"))
            if not rest or rest.endswith(b"\n"):
                break
        if skipped == 0:
            yield raw, False  # the last line of the file, without a newline
            continue
        # Cut at the last whole token; a single token longer than the bound keeps its first
        # max_bytes bytes, so the line still yields a (flagged) sentence, never nothing.
        cut = raw.rfind(b" ")
        yield (raw[:cut] if cut > 0 else raw), True


def read_lines(
    path: str | Path,
    *,
    max_line_tokens: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """Yield every non-blank line of `path` in file order, normalized to single spaces between
    tokens (so `line.split(" ")` gives its tokens), following the module's bad-input policies.

    Raises FileNotFoundError naming the file if it does not exist (e.g. vanished mid-run).
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    cleaner = _LineCleaner(path, max_line_tokens, stats)
    max_bytes = max_line_tokens * BYTES_PER_TOKEN if max_line_tokens else UNBOUNDED_LINE_BYTES
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"shard {path} does not exist (was it removed?)") from None
    with handle:
        for line_number, (raw, was_cut) in enumerate(_bounded_lines(handle, max_bytes), 1):
            if line_number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if was_cut:
                stats.truncated_lines += 1
                cleaner.warn(line_number, "line longer than %d bytes cut", max_bytes)
            line = cleaner.clean(line_number, raw)
            if line is not None:
                yield line
    cleaner.finish()


def _clean_file_lines(data: bytes, max_line_tokens: int | None) -> list[str] | None:
    """The lines of a file's bytes when they need no repair under any policy above, else None.
    Every check is one C-level scan (on bytes: ' ' and '\\n' never occur inside a multi-byte
    UTF-8 character), so a clean shard costs no Python work per line."""
    data = data[:-1] if data.endswith(b"\n") else data
    if not data or data.startswith((_BOM, b" ", b"\n")) or data.endswith((b" ", b"\n")):
        return None
    if any(bad in data for bad in (b"\r", b"\0", b"  ", b" \n", b"\n ", b"\n\n")):
        return None
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if any(map(str.isspace, lines)):
        return None
    if max_line_tokens is not None and max(map(len, lines)) > max_line_tokens:
        return None  # might have too many tokens: let the line-by-line reader count them
    return lines


def read_shard(
    path: str | Path,
    *,
    max_line_tokens: int | None = None,
    stats: ReadStats | None = None,
) -> list[str]:
    """All lines `read_lines` would yield, as a list. A shard up to `WHOLE_FILE_BYTES` is read
    at once and, when it needs no repair (the normal case), split without per-line work."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"shard {path} does not exist (was it removed?)") from None
    lines = (
        _clean_file_lines(path.read_bytes(), max_line_tokens) if size <= WHOLE_FILE_BYTES else None
    )
    if lines is None:
        return list(read_lines(path, max_line_tokens=max_line_tokens, stats=stats))
    if stats is not None:
        stats.sentences += len(lines)
    return lines


def read_sentences(
    path: str | Path,
    *,
    max_line_tokens: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[list[str]]:
    """Yield the token list of every non-blank line of `path`, in file order (see `read_lines`
    for the handling of bad input)."""
    for line in read_lines(path, max_line_tokens=max_line_tokens, stats=stats):
        yield line.split(" ")
