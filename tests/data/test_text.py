"""Bad input for the shard reader: every policy of lm1b.data.text has a test here."""

from __future__ import annotations

import logging

import pytest

from lm1b.data.text import ReadStats, read_lines, read_sentences, read_shard, split_tokens


def _read(path, **kwargs):
    stats = ReadStats()
    lines = list(read_lines(path, stats=stats, **kwargs))
    assert read_shard(path, **kwargs) == lines  # the fast path agrees with the reader
    return lines, stats


def test_split_tokens_keeps_unusual_characters():
    assert split_tokens("a \x92 b\xa0c  d ") == ["a", "\x92", "b\xa0c", "d"]


def test_blank_and_whitespace_lines_are_skipped_and_not_counted(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(b"a b\n\n   \n\t \nc\n \n")
    lines, stats = _read(path)
    assert lines == ["a b", "c"]
    assert (stats.sentences, stats.blank_lines) == (2, 4)


def test_crlf_bom_and_missing_final_newline(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(b"\xef\xbb\xbfthe cat\r\nsat  down \r\nlast line")
    lines, _ = _read(path)
    assert lines == ["the cat", "sat down", "last line"]


def test_invalid_utf8_is_replaced_counted_and_warned(tmp_path, caplog):
    path = tmp_path / "shard"
    path.write_bytes(b"good line\nbad \xff\xfe bytes\n")
    with caplog.at_level(logging.WARNING, logger="lm1b.data.text"):
        lines, stats = _read(path)
    assert lines == ["good line", "bad \ufffd\ufffd bytes"]
    assert stats.decode_errors == 1
    assert f"{path}:2: invalid UTF-8" in caplog.text


def test_nul_bytes_are_deleted_with_a_warning(tmp_path, caplog):
    path = tmp_path / "shard"
    path.write_bytes(b"a\x00b c\n\x00\x00\x00\n")
    with caplog.at_level(logging.WARNING, logger="lm1b.data.text"):
        lines, stats = _read(path)
    assert lines == ["ab c"]
    assert stats.nul_lines == 2
    assert f"{path}:1: NUL" in caplog.text


def test_u0092_token_survives(tmp_path):
    path = tmp_path / "shard"
    path.write_text("it \x92 s\n", encoding="utf-8")
    assert list(read_sentences(path)) == [["it", "\x92", "s"]]


def test_huge_line_is_cut_with_bounded_memory(tmp_path, caplog):
    path = tmp_path / "shard"
    huge = b"word " * 2_000_000  # 10 MB on one line
    path.write_bytes(b"first line\n" + huge + b"\nlast line\n")
    with caplog.at_level(logging.WARNING, logger="lm1b.data.text"):
        sentences = list(read_sentences(path, max_line_tokens=1000))
    assert sentences[0] == ["first", "line"] and sentences[2] == ["last", "line"]
    assert sentences[1] == ["word"] * 1000
    assert f"{path}:2: line longer than 64000 bytes cut" in caplog.text
    assert read_shard(path, max_line_tokens=1000)[1] == " ".join(["word"] * 1000)


def test_long_line_truncated_to_max_tokens(tmp_path, caplog):
    path = tmp_path / "shard"
    path.write_text("a b c d e\nf g\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lm1b.data.text"):
        lines, stats = _read(path, max_line_tokens=3)
    assert lines == ["a b c", "f g"]
    assert stats.truncated_lines == 1
    assert "truncated to 3 tokens" in caplog.text


def test_warnings_are_limited_per_file(tmp_path, caplog):
    path = tmp_path / "shard"
    path.write_bytes(b"\xff\n" * 20)
    with caplog.at_level(logging.WARNING, logger="lm1b.data.text"):
        _read(path)
    assert caplog.text.count("invalid UTF-8") == 5 * 2  # read_lines and read_shard
    assert "15 more warnings" in caplog.text


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone"):
        list(read_lines(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="gone"):
        read_shard(tmp_path / "gone")
