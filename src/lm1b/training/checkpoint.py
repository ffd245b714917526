"""Atomic, self-validating checkpoints: one `step-000000010.pt` file per saved step.

A checkpoint is written to `<name>.tmp`, flushed and fsynced, renamed over the final name with
`os.replace` and the directory is fsynced, so a crash at any moment leaves either the previous
set of checkpoints or the new complete file, never a half-written file under a final name
(fairseq's rule). Each file carries a `meta` entry; only files whose metadata says complete and
whose step matches the file name are trusted (torchtitan's rule), and only files that hold
every entry their use reads, of the right type (`MODEL_ENTRIES`, `RESUME_ENTRIES`), are used:
so a truncated, foreign or hand-edited file is skipped with a warning and the newest valid one
before it is used instead, or, named explicitly, refused in one line naming the entry.

Everything stored must load with `torch.load(weights_only=True)`: tensors, dicts, lists,
tuples, numbers, strings, bools and None (see `lm1b.training.rng` for RNG state).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lm1b.atomic_files import TMP_SUFFIX, free_space, replace_atomically
from lm1b.config.checks import require

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "meta"
CHECKPOINT_DIR_NAME = "checkpoints"  # <run_dir>/checkpoints
# The checkpoint with the best validation perplexity so far, outside the keep-last rotation.
BEST_NAME = "best.pt"
_NAME_PATTERN = re.compile(r"step-(\d+)\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read or trusted; the message names the file or directory."""


def checkpoint_name(step: int) -> str:
    """The file name for `step`; zero-padded so that names sort like steps."""
    return f"step-{step:09d}.pt"


def _step_of(path: Path) -> int | None:
    """The step encoded in a checkpoint file name, or None for any other file."""
    match = _NAME_PATTERN.fullmatch(path.name)
    return int(match.group(1)) if match else None


def _write_atomically(payload: dict, final: Path) -> None:
    """Write `payload` to `final` through `<final>.tmp`, fsync and a rename."""
    try:
        replace_atomically(final, lambda file: torch.save(payload, file))
    except Exception as exc:
        raise CheckpointError(
            f"could not write checkpoint {final} ({free_space(final.parent)}): {exc}"
        ) from exc


def _meta(step: int, run_id: str | None) -> dict:
    """The `meta` entry that marks a checkpoint of `step` complete (checked by _check_meta),
    with the id of the run that wrote it (retention deletes only its own run's files)."""
    return {
        "step": step,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "saved_at": time.time(),
        "run_id": run_id,
    }


def _check_meta(state: Any, path: Path) -> None:
    """Raise CheckpointError unless `state` is a complete checkpoint for the step its name says."""
    if not isinstance(state, dict) or not isinstance(state.get(META_KEY), dict):
        raise CheckpointError(f"checkpoint {path} has no '{META_KEY}' entry")
    meta = state[META_KEY]
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version={meta.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    if meta.get("complete") is not True:
        raise CheckpointError(f"checkpoint {path} is not marked complete")
    step = _step_of(path)
    if step is not None and meta.get("step") != step:
        raise CheckpointError(
            f"checkpoint {path} records step={meta.get('step')!r} but its name says {step}"
        )


class Entry(NamedTuple):
    """An entry a checkpoint must hold: its dotted key, the type of its value and, for a list or
    dict, the type of every item in it."""

    key: str
    kind: type | tuple[type, ...]
    items: type | None = None


# What using a trained model reads (lm1b.inference, trainer.init_from): every checkpoint,
# compressed ones included, holds it. Keys inside an entry are checked after the entry itself,
# and not at all when it is None (the EMA of a run trained without one).
MODEL_ENTRIES = (
    Entry("config", dict),
    Entry("tokenizer", dict),
    Entry("tokenizer.kind", str),
    Entry("model", dict, torch.Tensor),
    Entry("ema", (dict, type(None))),
    Entry("ema.shadow", list, torch.Tensor),
    Entry("ema.num_updates", int),
    Entry("counters", dict),
    Entry("counters.step", int),
)
# What resuming a run reads besides (Trainer.load_state_dict): only training checkpoints hold it.
RESUME_ENTRIES = (
    *MODEL_ENTRIES,
    Entry("optimizers", list, dict),
    Entry("world_size", int),
    Entry("ranks", list, dict),
)


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def _items_of(value: list | dict):
    return value.values() if isinstance(value, dict) else value


def _entry_problem(state: dict, entry: Entry) -> str | None:
    """What is wrong with `entry` in `state` (None: nothing, or its parent is None)."""
    *parents, name = entry.key.split(".")
    holder = state
    for parent in parents:  # checked by an earlier entry: a dict, or None
        holder = holder[parent]
        if holder is None:
            return None
    if name not in holder:
        return f"lacks '{entry.key}'"
    value = holder[name]
    if not isinstance(value, entry.kind):
        found, expected = type(value).__name__, _type_names(entry.kind)
        return f"has '{entry.key}' of type {found}, expected {expected}"
    if entry.items is None:
        return None
    wrong = [item for item in _items_of(value) if not isinstance(item, entry.items)]
    if wrong:
        found, expected = type(wrong[0]).__name__, entry.items.__name__
        return f"has '{entry.key}' holding a {found}, expected {expected} items only"
    return None


def _check_entries(state: dict, path: Path, entries: tuple[Entry, ...]) -> None:
    """Raise CheckpointError naming the file and the first of `entries` that `state` lacks or
    holds with the wrong type: a hand-edited or foreign file is refused in one line where it
    is loaded, not in a KeyError or TypeError wherever the entry is first read."""
    for entry in entries:
        problem = _entry_problem(state, entry)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} {problem}")


def load_checkpoint(path: str | Path, entries: tuple[Entry, ...] = MODEL_ENTRIES) -> dict:
    """Load and validate one checkpoint file on the CPU with `weights_only=True`.

    Any failure (missing file, truncation, garbage, an object outside the weights_only allow
    list, missing or incomplete metadata, a missing or mistyped one of `entries`) raises
    CheckpointError naming the file.
    """
    path = Path(path)
    try:
        state = _load_mapped(path)
    # torch.load raises many types for a bad file (UnpicklingError, EOFError, RuntimeError from
    # the zip reader, OSError, ...); callers need one type and a message naming the file.
    except Exception as exc:
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
    _check_meta(state, path)
    _check_entries(state, path, entries)
    return state


def _load_mapped(path: Path) -> dict:
    """torch.load memory-mapped: the tensors are read from the file as they are used, not
    copied into memory first (at paper size the 14 GB checkpoint would otherwise be held on
    top of the model and optimizer state it is loaded into). A filesystem that cannot map
    files gets a plain load."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception:  # the plain load says what is wrong with the file, if anything is
        return torch.load(path, weights_only=True, map_location="cpu")


def find_checkpoint(
    path: str | Path, prefer_best: bool = False, entries: tuple[Entry, ...] = MODEL_ENTRIES
) -> tuple[Path, dict]:
    """A checkpoint file as given; for a run or checkpoints directory, its best checkpoint
    (`best.pt`, when `prefer_best` and it is valid), else its newest valid checkpoint, valid
    meaning it holds `entries`. Returns the file and its loaded, validated state: finding a
    valid file means loading it, so the caller never loads it a second time (14 GB at paper
    size).

    Commands that use a trained model (evaluate, score, generate, compress, init_from) prefer
    the best; resuming a run always takes the newest.
    """
    path = Path(path)
    if path.is_file():
        return path, load_checkpoint(path, entries)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    directory = path / CHECKPOINT_DIR_NAME if (path / CHECKPOINT_DIR_NAME).is_dir() else path
    manager = CheckpointManager(directory)
    found = (manager.best(entries) if prefer_best else None) or manager.latest(entries)
    if found is None:
        raise CheckpointError(f"no valid checkpoint in {directory}")
    return found


class CheckpointManager:
    """Saves, finds and prunes the checkpoints of one run in `directory`.

    Only one process (rank 0) may save; `latest()` removes leftover tmp files, so it must not
    run while another process is saving into the same directory (it runs at start-up).
    """

    def __init__(
        self, directory: str | Path, keep_last: int = 3, run_id: str | None = None
    ) -> None:
        require(
            keep_last >= 2,
            "trainer.keep_last",
            keep_last,
            "at least 2, so a corrupt newest checkpoint leaves a valid one to fall back to",
        )
        self.directory = Path(directory)
        self.keep_last = keep_last
        # Written into every checkpoint's meta; retention deletes only files with this id (and
        # files from before run ids existed, which carry none).
        self.run_id = run_id

    def check_writable(self) -> None:
        """Create the directory and prove a file can be written and removed there.

        Called before training starts so that a bad output path fails in seconds, not at the
        first checkpoint hours later.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-test-") as probe:
                probe.write(b"ok")
                probe.flush()
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint directory {self.directory} is not writable: {exc}"
            ) from exc

    def paths(self) -> list[Path]:
        """The checkpoint files, oldest first (by step, not by name or mtime)."""
        if not self.directory.is_dir():
            return []
        found = [(step, p) for p in self.directory.iterdir() if (step := _step_of(p)) is not None]
        return [path for _, path in sorted(found) if path.is_file()]

    def save(self, state: dict, step: int) -> Path:
        """Write `state` plus a `meta` entry as the checkpoint of `step`, then prune old ones.

        The caller's dict is not modified; a `meta` key in it is replaced. Returns the path.
        """
        if step < 0:
            raise ValueError(f"checkpoint step must be 0 or more, got {step}")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / checkpoint_name(step)
        started = time.perf_counter()
        _write_atomically({**state, META_KEY: _meta(step, self.run_id)}, final)
        logger.info(
            "saved checkpoint %s (%.2f GB in %.1f s)",
            final,
            final.stat().st_size / 1e9,
            time.perf_counter() - started,
        )
        self._prune(final)
        return final

    def save_best(self, state: dict, step: int) -> Path:
        """Write `state` as `best.pt` (atomically, replacing the previous best); never pruned."""
        final = self.directory / BEST_NAME
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomically({**state, META_KEY: _meta(step, self.run_id)}, final)
        logger.info("saved best checkpoint %s (step %d)", final, step)
        return final

    def best(self, entries: tuple[Entry, ...] = MODEL_ENTRIES) -> tuple[Path, dict] | None:
        """The best checkpoint and its state, or None when there is none (or it is invalid,
        lacking one of `entries` included: a warning names it, and the caller falls back to
        the newest)."""
        path = self.directory / BEST_NAME
        if not path.is_file():
            return None
        try:
            return path, load_checkpoint(path, entries)
        except CheckpointError as exc:
            logger.warning("skipping invalid best checkpoint: %s", exc)
            return None

    def latest(self, entries: tuple[Entry, ...] = MODEL_ENTRIES) -> tuple[Path, dict] | None:
        """The newest valid checkpoint holding `entries` and its state, or None.

        Invalid newer files (a file that loads but lacks one of `entries`, or holds it with the
        wrong type, included) are skipped with a warning naming them and the entry; tmp files
        left by a killed writer are removed.
        """
        self._remove_leftover_tmp_files()
        candidates = self.paths()
        for path in reversed(candidates):
            try:
                return path, load_checkpoint(path, entries)
            except CheckpointError as exc:
                logger.warning("skipping invalid checkpoint: %s", exc)
        if candidates:
            logger.error(
                "none of the %d checkpoints in %s is valid", len(candidates), self.directory
            )
        return None

    def _prune(self, just_written: Path) -> None:
        """Delete this run's oldest valid checkpoints beyond `keep_last`, counting only those:
        a file that is not a valid checkpoint of this run (garbage, a truncated file, another
        run's) is neither counted nor deleted, and the file just written never is. A failed
        delete only warns."""
        mine = [p for p in self.paths() if p == just_written or self._is_ours(p)]
        for path in mine[: -self.keep_last]:
            if path == just_written:  # an older step written last (resumed from an old file)
                continue
            try:
                path.unlink()
            except OSError as exc:  # a full or flaky filesystem must not stop training
                logger.warning("could not delete old checkpoint %s: %s", path, exc)

    def _is_ours(self, path: Path) -> bool:
        """Whether `path` is a valid checkpoint written by this run (read through a memory map:
        only the metadata is touched, not gigabytes of tables)."""
        try:
            state = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
            _check_meta(state, path)
        except Exception as exc:  # any unreadable file: leave it alone (see load_checkpoint)
            logger.warning("retention leaves %s alone: not a valid checkpoint (%s)", path, exc)
            return False
        owner = state[META_KEY].get("run_id")
        if owner is not None and owner != self.run_id:
            logger.warning("retention leaves %s alone: written by another run (%s)", path, owner)
            return False
        return True

    def _remove_leftover_tmp_files(self) -> None:
        """Remove `step-*.pt.tmp` and `best.pt.tmp` files; they are never complete (the rename
        did not happen)."""
        if not self.directory.is_dir():
            return
        leftovers = [*self.directory.glob("step-*.pt" + TMP_SUFFIX)]
        leftovers += self.directory.glob(BEST_NAME + TMP_SUFFIX)
        for tmp in leftovers:
            try:
                tmp.unlink()
                logger.info("removed incomplete checkpoint %s", tmp)
            except OSError as exc:
                logger.warning("could not remove incomplete checkpoint %s: %s", tmp, exc)
