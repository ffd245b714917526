"""Download, verify and prepare the One Billion Word corpus (`make data`).

    python -m lm1b.download [--dest data/lm1b] [--from TARBALL_OR_DIR] [--verify-only]

Steps, each skipped when its result is already there, so a re-run is cheap and resumes where a
killed run stopped:

1. fetch the release tarball into DEST (resumable), unless `--from` names a local copy;
2. extract it safely to DEST/1-billion-word-language-modeling-benchmark-r13output/;
3. check every tokenized shard against the official MD5 list and record success in DEST/VERIFIED;
4. build DEST/1b_word_vocab.txt from the training shards (min count 3) unless `--no-vocab`.

`--from DIR` with an already extracted tree links it (a symlink DEST/<tree> -> DIR) instead of
copying 4 GB; the source is only ever read. Exit status: 0 ready, 1 shards missing or corrupt,
2 any other failure (download, archive, disk, usage).
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from lm1b.data.archive import ArchiveError, extract_tarball
from lm1b.data.fetch import DownloadError, download
from lm1b.data.verify import (
    ChecksumListError,
    load_expected,
    marker_is_current,
    verify_tree,
    write_marker,
)
from lm1b.vocab import VocabularyError, build_vocabulary

logger = logging.getLogger(__name__)

DEFAULT_URL = (
    "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz"
)
DEFAULT_DEST = Path("data/lm1b")
TREE_NAME = "1-billion-word-language-modeling-benchmark-r13output"
TRAIN_DIR = "training-monolingual.tokenized.shuffled"
HELDOUT_DIR = "heldout-monolingual.tokenized.shuffled"
MARKER_NAME = "VERIFIED"
VOCAB_NAME = "1b_word_vocab.txt"
VOCAB_MIN_COUNT = 3  # the standard 1b_word_vocab.txt cut; configs/data/lm1b.yaml agrees
VOCAB_WORKERS = 2


class PrepareError(RuntimeError):
    """A request the tool cannot carry out (e.g. a `--from` path that holds no corpus)."""


# Failures expected in normal use: reported as one line, without a traceback.
EXPECTED_ERRORS = (
    PrepareError,
    DownloadError,
    ArchiveError,
    ChecksumListError,
    VocabularyError,
    OSError,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see --help); `argv` None reads sys.argv."""
    parser = argparse.ArgumentParser(
        prog="python -m lm1b.download",
        description="Download, extract and verify the One Billion Word benchmark, then build "
        "its word vocabulary. Re-running skips the steps already done.",
    )
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help="target directory (default: %(default)s)"
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="release tarball URL (default: the official one)"
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="TARBALL_OR_DIR",
        help="use a local copy instead of downloading: the tarball, a directory holding it, "
        "or an extracted tree (linked, not copied)",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="only re-check the MD5 of every shard of the existing tree",
    )
    parser.add_argument("--no-vocab", action="store_true", help=f"do not build {VOCAB_NAME}")
    parser.add_argument(
        "--md5-file",
        type=Path,
        help="checksum list to verify against (default: the bundled official list)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="network timeout in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--retries", type=int, default=5, help="retries of a failed download (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-wait",
        type=float,
        default=2.0,
        help="seconds before the first retry, doubling each time (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ready, 1 verification failed, 2 error)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return prepare(args)
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def prepare(args: argparse.Namespace) -> int:
    """Run the steps described in the module docstring for the parsed `args`."""
    expected = load_expected(args.md5_file)
    tree, marker = args.dest / TREE_NAME, args.dest / MARKER_NAME
    if args.verify_only:
        if not tree.exists():
            raise PrepareError(f"{tree} does not exist; run without --verify-only to get it")
        return check_tree(tree, marker, expected)
    if marker_is_current(marker, tree, expected):
        logger.info("%s was already verified (%s); skipping the MD5 check", tree, marker)
    else:
        obtain_tree(args, tree)
        status = check_tree(tree, marker, expected)
        if status:
            return status
    if not args.no_vocab:
        ensure_vocabulary(args.dest / VOCAB_NAME, tree, expected)
    return 0


def obtain_tree(args: argparse.Namespace, tree: Path) -> None:
    """Make `tree` exist: keep an existing one, link or extract `--from`, or download."""
    if tree.exists() or tree.is_symlink():
        logger.info("checking the existing %s (delete it to extract or import again)", tree)
        return
    args.dest.mkdir(parents=True, exist_ok=True)
    tarball_name = Path(urllib.parse.urlparse(args.url).path).name or f"{TREE_NAME}.tar.gz"
    if args.source is None:
        tarball = download(
            args.url,
            args.dest / tarball_name,
            timeout=args.timeout,
            retries=args.retries,
            retry_wait=args.retry_wait,
        )
    elif args.source.is_dir():
        found = find_tree(args.source)
        if found is not None:
            tree.symlink_to(found.resolve(), target_is_directory=True)
            logger.info("linked %s -> %s", tree, found.resolve())
            return
        tarball = args.source / tarball_name
        if not tarball.is_file():
            raise PrepareError(
                f"{args.source} holds neither an extracted LM1B tree nor {tarball_name}"
            )
    elif args.source.is_file():
        tarball = args.source
    else:
        raise PrepareError(f"--from {args.source}: no such file or directory")
    extract_tarball(tarball, args.dest, TREE_NAME)


def find_tree(directory: Path) -> Path | None:
    """The extracted tree at `directory` or directly below it, recognized by its shard folders."""
    for candidate in (directory, directory / TREE_NAME):
        if (candidate / TRAIN_DIR).is_dir() or (candidate / HELDOUT_DIR).is_dir():
            return candidate
    return None


def check_tree(tree: Path, marker: Path, expected: Mapping[str, str]) -> int:
    """Verify every shard, print the summary, and update the marker; return the exit status."""
    report = verify_tree(tree, expected)
    print(report.summary())
    if not report.passed:
        marker.unlink(missing_ok=True)
        print(
            f"{tree} is incomplete or damaged: delete it (the tarball, if any, is kept in "
            f"{tree.parent}) and run again to extract it afresh",
            file=sys.stderr,
        )
        return 1
    write_marker(marker, tree, expected)
    return 0


def ensure_vocabulary(path: Path, tree: Path, expected: Mapping[str, str]) -> None:
    """Build the word vocabulary from the training shards unless `path` already exists."""
    if path.exists():
        logger.info("vocabulary %s already exists", path)
        return
    files = [tree / name for name in sorted(expected) if name.startswith(f"{TRAIN_DIR}/")]
    logger.info("building %s from %d training shards", path, len(files))
    build_vocabulary(files, min_count=VOCAB_MIN_COUNT, num_workers=VOCAB_WORKERS).save(path)


if __name__ == "__main__":
    sys.exit(main())
