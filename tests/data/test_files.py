"""Resolving shard globs: errors that name the pattern, directories skipped."""

from __future__ import annotations

import logging

import pytest

from lm1b.config.data import DataConfig
from lm1b.data.build import resolve_data_files
from lm1b.data.files import resolve_files


def test_glob_matching_nothing_names_field_pattern_and_root(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        resolve_files("nope/*", tmp_path, "data.train_files")
    message = str(error.value)
    assert "no files match data.train_files='nope/*'" in message and str(tmp_path) in message


def test_absolute_pattern_and_list_keep_order_without_duplicates(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / name).write_text("x\n")
    files = resolve_files([str(tmp_path / "c"), "?"], tmp_path, "data.valid_files")
    assert [f.name for f in files] == ["c", "a", "b"]


def test_directories_are_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "shard-1").write_text("x\n")
    (tmp_path / "shard-dir").mkdir()
    with caplog.at_level(logging.WARNING, logger="lm1b.data.files"):
        files = resolve_files("shard-*", tmp_path, "data.train_files")
    assert [f.name for f in files] == ["shard-1"]
    assert "shard-dir" in caplog.text


def test_only_directories_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="only directories"):
        resolve_files("d", tmp_path, "data.train_files")


def test_resolve_data_files_checks_every_split_at_start_up(tmp_path):
    (tmp_path / "train").write_text("x\n")
    cfg = DataConfig(root=str(tmp_path), train_files="train", valid_files="valid-*")
    with pytest.raises(FileNotFoundError, match="data.valid_files='valid-\\*'"):
        resolve_data_files(cfg)
    cfg.valid_files = "train"
    assert set(resolve_data_files(cfg)) == {"train", "valid"}
