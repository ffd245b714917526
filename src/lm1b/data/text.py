"""Reading LM1B shards: one sentence per line, tokens separated by single spaces.

This is the one place that knows how a shard's bytes become token lists; every reader
(vocabulary builder, training stream, evaluation stream) goes through `read_sentences`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"


def split_tokens(line: str) -> list[str]:
    """Split on single spaces exactly as the corpus is tokenized.

    `str.split()` would also split on (and drop) characters such as U+0092 or U+00A0 that are
    tokens of the corpus, so split on ' ' and drop only the empty strings of repeated spaces.
    """
    return [token for token in line.split(" ") if token]


def read_sentences(path: str | Path, *, max_line_tokens: int | None = None) -> Iterator[list[str]]:
    """Yield the token list of every non-blank line of `path`, in file order.

    Lines are split on b"\\n" only; a trailing "\\r" (CRLF files) and a leading UTF-8 BOM are
    removed; blank and whitespace-only lines are skipped; invalid UTF-8 bytes become U+FFFD
    with a warning naming the file and line; lines longer than `max_line_tokens` are
    truncated with a warning.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                logger.warning("%s:%d: invalid UTF-8 replaced by U+FFFD", path, line_number)
                line = raw.decode("utf-8", errors="replace")
            tokens = split_tokens(line.strip(" \t"))
            if not tokens:
                continue
            if max_line_tokens is not None and len(tokens) > max_line_tokens:
                logger.warning(
                    "%s:%d: %d tokens truncated to %d",
                    path,
                    line_number,
                    len(tokens),
                    max_line_tokens,
                )
                tokens = tokens[:max_line_tokens]
            yield tokens
