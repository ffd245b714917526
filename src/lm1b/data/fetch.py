"""Resumable HTTP download with a progress bar, timeouts and retries (stdlib urllib + tqdm).

The file grows as `<dest>.part` and is renamed to `<dest>` only once its size matches what the
server announced, so an interrupted run never leaves a truncated file under the final name; the
next run resumes the `.part` with an HTTP Range request.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Statuses worth retrying: request timeout, rate limiting and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class DownloadError(RuntimeError):
    """The download failed for good; the message names the URL."""


class IncompleteDownload(Exception):
    """The body ended early or the partial file was unusable; the next try resumes or restarts."""


# Failures of the network rather than of this machine: these are retried (disk errors are not).
NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    IncompleteDownload,
)


def download(
    url: str, dest: Path, *, timeout: float = 60.0, retries: int = 5, retry_wait: float = 2.0
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` if a previous run left one; return `dest`.

    Transient failures are retried `retries` times, waiting `retry_wait * 2**attempt` seconds
    in between. An existing `dest` is complete by construction and is not fetched again.
    """
    if dest.exists():
        logger.info("using the already downloaded %s", dest)
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except NETWORK_ERRORS as exc:
            if attempt == retries or not _is_transient(exc):
                raise DownloadError(f"cannot download {url}: {_describe(exc)}") from exc
            delay = retry_wait * 2**attempt
            logger.warning(
                "download of %s failed (%s); retrying in %g s", url, _describe(exc), delay
            )
            time.sleep(delay)
    os.replace(part, dest)
    logger.info("downloaded %s", dest)
    return dest


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """One request: append to `part` from its current size (or restart it), then check its size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            _check_unsatisfiable_range(exc, part, offset)
            return
        raise
    with response:
        start = _response_start(response, url, offset)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as out:
            _copy(response, out, total=total, initial=start, label=part.name)
    size = part.stat().st_size
    if total is None:
        logger.warning("%s sent no Content-Length; cannot check the download is complete", url)
    elif size != total:
        raise IncompleteDownload(f"connection closed after {size} of {total} bytes")


def _response_start(response: http.client.HTTPResponse, url: str, offset: int) -> int:
    """The byte offset the response body starts at: `offset` for a 206, 0 for a plain 200."""
    if response.status != 206:
        if offset:
            logger.info("%s ignored the range request; downloading again from the start", url)
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != offset:
        raise DownloadError(f"{url} answered a request for bytes {offset}- with a different range")
    logger.info("resuming %s at byte %d", url, offset)
    return offset


def _check_unsatisfiable_range(exc: urllib.error.HTTPError, part: Path, offset: int) -> None:
    """A 416 means `part` reaches the end of the file: fine if exactly complete, else restart."""
    match = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == offset:
        return
    part.unlink()
    raise IncompleteDownload(f"the partial file {part.name} is longer than the remote file")


def _copy(
    response: BinaryIO, out: BinaryIO, *, total: int | None, initial: int, label: str
) -> None:
    """Stream the body to `out` in chunks, with a progress bar (shown only on a terminal)."""
    with tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=None,
    ) as bar:
        while chunk := response.read(CHUNK_SIZE):
            out.write(chunk)
            bar.update(len(chunk))


def _is_transient(exc: BaseException) -> bool:
    """HTTP errors are retried only for the statuses that may clear up; network errors always."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in RETRY_STATUSES
    return True


def _describe(exc: BaseException) -> str:
    """A short human reason for a network failure (urllib's own str() is often vague)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
