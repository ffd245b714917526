"""Word vocabulary in the standard LM1B format: one "word count" line per entry, ids = line order.

The standard `1b_word_vocab.txt` (793,471 entries) lists words by decreasing training-set
frequency; the specials `<S>`, `</S>` and `<UNK>` are entries like any other, placed by their
own counts (`<S>` is line 3 of the standard file). `build_vocabulary` follows the same rule:
`<S>` and `</S>` count one per sentence, `<UNK>` counts the tokens that were cut, and all entries
are sorted by decreasing count with ties broken by the word's code points, so the result is a
pure function of the corpus and the cut.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lm1b.atomic_files import write_text_atomically
from lm1b.data.text import read_sentences

logger = logging.getLogger(__name__)

BOS, EOS, UNK = "<S>", "</S>", "<UNK>"
SPECIALS = (BOS, EOS, UNK)


class VocabularyError(ValueError):
    """A vocabulary file or build request is malformed; the message names the file and line."""


class Vocabulary:
    """An ordered list of words with counts; the id of a word is its position."""

    def __init__(self, words: Sequence[str], counts: Sequence[int]) -> None:
        if len(words) != len(counts):
            raise VocabularyError(f"{len(words)} words but {len(counts)} counts")
        self.words = list(words)
        self.counts = [int(c) for c in counts]
        self._ids = {word: index for index, word in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            duplicates = sorted(w for w, c in Counter(self.words).items() if c > 1)
            raise VocabularyError(f"duplicate words: {duplicates[:5]}")
        missing = [s for s in SPECIALS if s not in self._ids]
        if missing:
            raise VocabularyError(
                f"missing special tokens {missing}; every vocabulary needs {SPECIALS}"
            )
        self.bos_id = self._ids[BOS]
        self.eos_id = self._ids[EOS]
        self.unk_id = self._ids[UNK]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.words == other.words
            and self.counts == other.counts
        )

    def lookup(self, word: str) -> int:
        """The id of `word`, or the `<UNK>` id for a word not in the vocabulary."""
        return self._ids.get(word, self.unk_id)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of `tokens`; unknown tokens map to `<UNK>`. No sentence markers are added."""
        get, unk = self._ids.get, self.unk_id
        return [get(token, unk) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of `ids`."""
        return [self.words[i] for i in ids]

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a "word count" file, checking format, duplicates and frequency order."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} does not exist")
        words: list[str] = []
        counts: list[int] = []
        first_line: dict[str, int] = {}
        previous: tuple[str, int] | None = None  # the last non-special entry
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                word, count = _parse_line(path, line_number, raw)
                if word in first_line:
                    raise VocabularyError(
                        f"{path}:{line_number}: duplicate word {word!r} "
                        f"(first on line {first_line[word]})"
                    )
                _check_order(path, line_number, word, count, previous)
                if word not in SPECIALS:
                    previous = (word, count)
                first_line[word] = line_number
                words.append(word)
                counts.append(count)
        if not words:
            raise VocabularyError(f"{path}: empty vocabulary file")
        try:
            return cls(words, counts)
        except VocabularyError as error:
            raise VocabularyError(f"{path}: {error}") from None

    def save(self, path: str | Path) -> None:
        """Write the standard format atomically (temporary file, then rename)."""
        lines = (f"{w} {c}\n" for w, c in zip(self.words, self.counts, strict=True))
        write_text_atomically("".join(lines), path)


def _parse_line(path: Path, line_number: int, raw: bytes) -> tuple[str, int]:
    """Split one "word count\\n" line; raise VocabularyError naming the line."""
    try:
        line = raw.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError:
        raise VocabularyError(f"{path}:{line_number}: not valid UTF-8") from None
    parts = line.split(" ")
    # isascii: str.isdigit accepts '²' and other digits that int() refuses.
    if len(parts) != 2 or not parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
        raise VocabularyError(
            f"{path}:{line_number}: expected 'word count' (one space, a non-negative integer), "
            f"got {excerpt(line)}"
        )
    return parts[0], int(parts[1])


def excerpt(text: str, limit: int = 80) -> str:
    """`text` quoted for an error message, cut to `limit` characters with its full length:
    a 50 MB line must not become a 100 MB message."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def _check_order(
    path: Path, line_number: int, word: str, count: int, previous: tuple[str, int] | None
) -> None:
    """Counts must not increase down the file; `previous` is the last non-special entry.
    Specials may stand anywhere (some files list them first with count 0)."""
    if word in SPECIALS or previous is None:
        return
    if count > previous[1]:
        raise VocabularyError(
            f"{path}:{line_number}: {word!r} has count {count} above the previous word's "
            f"{previous[1]}: entries must be sorted by decreasing count"
        )


def count_tokens(path: str | Path) -> tuple[Counter, int]:
    """Token counts and number of sentences of one shard."""
    counts: Counter = Counter()
    num_sentences = 0
    for tokens in read_sentences(path):
        counts.update(tokens)
        num_sentences += 1
    return counts, num_sentences


def _count_all(paths: Sequence[Path], num_workers: int) -> tuple[Counter, int]:
    """Sum `count_tokens` over shards, one process per shard up to `num_workers`."""
    total: Counter = Counter()
    num_sentences = 0
    if num_workers <= 1 or len(paths) <= 1:
        results: Iterable[tuple[Counter, int]] = map(count_tokens, paths)
        for counts, sentences in results:
            total.update(counts)
            num_sentences += sentences
        return total, num_sentences
    # spawn, not fork: the parent may hold torch's thread pools, which do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        for counts, sentences in pool.map(count_tokens, paths):
            total.update(counts)
            num_sentences += sentences
    return total, num_sentences


def build_vocabulary(
    paths: Sequence[str | Path],
    min_count: int = 1,
    max_size: int | None = None,
    num_workers: int = 2,
) -> Vocabulary:
    """Count the tokens of `paths` and keep the words seen at least `min_count` times, at most
    `max_size` entries in all (specials included). A corpus token spelled like a special is
    counted as that special. Ties in count are broken by code-point order."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise VocabularyError("no training files to build a vocabulary from")
    if max_size is not None and max_size < len(SPECIALS) + 1:
        raise VocabularyError(f"max_size={max_size} leaves no room for words besides {SPECIALS}")
    counts, num_sentences = _count_all(paths, num_workers)
    if num_sentences == 0:
        raise VocabularyError(f"no sentences in {[str(p) for p in paths]}")
    special_counts = {BOS: num_sentences, EOS: num_sentences, UNK: 0}
    for special in SPECIALS:
        special_counts[special] += counts.pop(special, 0)
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=_frequency_order)
    if max_size is not None:
        kept = kept[: max_size - len(SPECIALS)]
    special_counts[UNK] += sum(counts.values()) - sum(c for _, c in kept)
    entries = sorted(kept + list(special_counts.items()), key=_frequency_order)
    logger.info(
        "vocabulary: %d entries from %d sentences in %d files",
        len(entries),
        num_sentences,
        len(paths),
    )
    return Vocabulary([w for w, _ in entries], [c for _, c in entries])


def _frequency_order(entry: tuple[str, int]) -> tuple[int, str]:
    return -entry[1], entry[0]
