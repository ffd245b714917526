"""The standard "word count" vocabulary: reading, building from shards, saving, bad files."""

from __future__ import annotations

import pytest

from lm1b.vocab import BOS, EOS, UNK, Vocabulary, VocabularyError, build_vocabulary


def _write(tmp_path, text, name="vocab.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _heldout(sample_dir, shard):
    return (
        sample_dir / f"heldout-monolingual.tokenized.shuffled/news.en.heldout-000{shard}-of-00050"
    )


@pytest.mark.sample
def test_build_from_sample_matches_reference_and_round_trips(sample_dir, tmp_path):
    shard = _heldout(sample_dir, 10)
    vocab = build_vocabulary([shard], min_count=2, num_workers=1)
    # docs/models.md: words with count >= 2 plus the three specials give 9,082 entries.
    assert len(vocab) == 9082
    lines = [line for line in shard.read_text("utf-8").split("\n") if line.strip(" ")]
    assert vocab.counts[vocab.bos_id] == vocab.counts[vocab.eos_id] == len(lines) == 6111
    total_tokens = sum(len([t for t in line.split(" ") if t]) for line in lines)
    words = [i for i, w in enumerate(vocab.words) if w not in (BOS, EOS, UNK)]
    assert sum(vocab.counts[i] for i in words) + vocab.counts[vocab.unk_id] == total_tokens
    assert vocab.counts == sorted(vocab.counts, reverse=True)

    path = tmp_path / "vocab.txt"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    loaded.save(tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_bytes() == path.read_bytes()


@pytest.mark.sample
def test_parallel_build_equals_serial_build(sample_dir):
    shards = sorted((sample_dir / "training-sample").glob("shard*"))
    serial = build_vocabulary(shards, min_count=1, num_workers=1)
    parallel = build_vocabulary(shards, min_count=1, num_workers=2)
    assert parallel == serial
    # U+0092 is a token of the corpus; str.split() would have dropped it.
    assert "\x92" in serial or all("\x92" not in p.read_text("utf-8") for p in shards)


@pytest.mark.sample
def test_standard_vocabulary_head_loads(sample_dir, tmp_path):
    head = (sample_dir / "vocab-head/1b_word_vocab.head1000.txt").read_bytes()
    # The head of the standard file stops before </S>: completing it makes a valid vocabulary.
    vocab = Vocabulary.load(_write(tmp_path, head + b"</S> 0\n"))
    assert (vocab.words[0], vocab.counts[0]) == ("the", 35936573)
    assert (vocab.bos_id, vocab.unk_id, len(vocab)) == (2, 38, 1001)
    with pytest.raises(VocabularyError, match=r"missing special tokens \['</S>'\]"):
        Vocabulary.load(_write(tmp_path, head, "head.txt"))


def test_ties_and_cut_are_deterministic(tmp_path):
    shard = _write(tmp_path, "b a c\na b d\nc e\n", "shard")
    vocab = build_vocabulary([shard], min_count=2, num_workers=1)
    # a, b and c appear twice; <S> and </S> 3 times (sentences); d and e cut into <UNK> (2).
    assert vocab.words == ["</S>", "<S>", "<UNK>", "a", "b", "c"]
    assert vocab.counts == [3, 3, 2, 2, 2, 2]
    capped = build_vocabulary([shard], min_count=1, max_size=5, num_workers=1)
    assert capped.words == ["<UNK>", "</S>", "<S>", "a", "b"]
    assert capped.counts[capped.unk_id] == 4  # c, c, d and e, now the most frequent entry


def test_encode_maps_unknown_words_to_unk():
    vocab = Vocabulary(["</S>", "<S>", "<UNK>", "x"], [2, 2, 0, 1])
    assert vocab.encode(["x", "y", "x"]) == [3, 2, 3]
    assert vocab.decode([3, 0]) == ["x", "</S>"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<S> 5\n</S> 5\n<UNK> 1\nthe 4\nthe 3\n", r":5: duplicate word 'the' \(first on line 4\)"),
        ("<S> 5\n</S> 5\n<UNK> 1\nthe\n", r":4: expected 'word count'"),
        ("<S> 5\n</S> 5\n<UNK> 1\nthe x\n", r":4: expected 'word count'"),
        ("<S> 5\n</S> 5\n<UNK> 1\nthe  4\n", r":4: expected 'word count'"),
        ("<S> 5\n</S> 5\n<UNK> 1\nthe \u00b2\n", r":4: expected 'word count'"),  # isdigit, not int
        ("<S> 5\n</S> 5\n<UNK> 1\nthe 4\na 7\n", r":5: 'a' has count 7 above the previous"),
        ("<S> 5\n</S> 5\nthe 4\n", r"missing special tokens \['<UNK>'\]"),
        ("", "empty vocabulary file"),
        (b"<S> 5\n</S> 5\n<UNK> 1\n\xff 3\n", ":4: not valid UTF-8"),
    ],
)
def test_bad_vocabulary_files_name_the_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(VocabularyError, match=message) as error:
        Vocabulary.load(path)
    assert str(path) in str(error.value)


def test_missing_vocabulary_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocabulary.load(tmp_path / "nope.txt")


def test_building_from_nothing_is_an_error(tmp_path):
    with pytest.raises(VocabularyError, match="no training files"):
        build_vocabulary([])
    with pytest.raises(VocabularyError, match="no sentences"):
        build_vocabulary([_write(tmp_path, "\n  \n", "blank")], num_workers=1)


def test_an_enormous_bad_line_is_echoed_as_a_short_excerpt(tmp_path):
    """A 50 MB line without a count once printed 100 MB of error."""
    path = _write(tmp_path, "<S> 5\n</S> 5\n<UNK> 1\n" + "x" * 50_000_000 + "\n")
    with pytest.raises(VocabularyError, match=r":4: expected 'word count'") as error:
        Vocabulary.load(path)
    assert len(str(error.value)) < 500 and "50,000,000 characters" in str(error.value)
