"""Tokenized splits: the validation tail, the memmapped token cache and its keys."""

import dataclasses
import os

import numpy as np
import pytest

from lmjax.config import DataConfig
from lmjax.data import sources, tokenizers
from lmjax.data.dataset import load_dataset
from lmjax.errors import DataError


def _entries(cache_root) -> list[str]:
    tokens = os.path.join(cache_root, "tokens")
    return sorted(os.listdir(tokens)) if os.path.isdir(tokens) else []


def test_shakespeare_default_splits(tmp_path):
    ds = load_dataset(DataConfig(cache_dir=str(tmp_path)))
    text = sources.embedded_text()
    assert ds.vocab_size == 65
    assert len(ds.train) + len(ds.val) == len(text) == 1_115_394
    assert abs(len(ds.val) - 0.1 * len(text)) <= 1
    assert ds.tokenizer.decode(ds.val) == text[len(text) - len(ds.val):]
    assert ds.train_bytes_per_token == ds.val_bytes_per_token == 1.0  # ASCII text, one char per token


@pytest.mark.parametrize("val_fraction", [0.1, 0.3])
def test_validation_is_the_last_val_fraction_of_the_text(tmp_path, corpus_file, corpus, val_fraction):
    ds = load_dataset(DataConfig(source=f"files:{corpus_file}", tokenizer="byte", val_fraction=val_fraction,
                                 cache_dir=str(tmp_path / "cache")))
    val = ds.tokenizer.decode(ds.val)
    assert corpus.endswith(val) and ds.tokenizer.decode(ds.train) + val == corpus
    assert abs(len(val) - val_fraction * len(corpus)) <= 1


def test_token_arrays_are_int32_memmaps(tmp_path, corpus_file):
    ds = load_dataset(DataConfig(source=f"files:{corpus_file}", cache_dir=str(tmp_path)))
    for arr in (ds.train, ds.val):
        assert isinstance(arr, np.memmap) and arr.dtype == np.int32
        assert os.path.commonpath([arr.filename, str(tmp_path)]) == str(tmp_path)


def test_token_cache_is_reused(tmp_path, corpus_file, monkeypatch):
    cfg = DataConfig(source=f"files:{corpus_file}", tokenizer="char", cache_dir=str(tmp_path))
    first = load_dataset(cfg)
    assert len(_entries(tmp_path)) == 1

    def no_encoding(self, text):
        raise AssertionError("the cached tokens should have been reused")

    monkeypatch.setattr(tokenizers.CharTokenizer, "encode", no_encoding)
    second = load_dataset(cfg)
    assert np.array_equal(second.train, first.train) and np.array_equal(second.val, first.val)
    assert (second.train_bytes_per_token, second.val_bytes_per_token) == \
        (first.train_bytes_per_token, first.val_bytes_per_token)
    assert len(_entries(tmp_path)) == 1


def test_token_cache_is_keyed_by_tokenizer(tmp_path, corpus_file):
    base = DataConfig(source=f"files:{corpus_file}", cache_dir=str(tmp_path), bpe_vocab_size=300)
    seen = {}
    for kind in ("byte", "char", "bpe"):
        ds = load_dataset(dataclasses.replace(base, tokenizer=kind))
        seen[kind] = (len(ds.train), ds.vocab_size)
    entries = _entries(tmp_path)
    assert len(entries) == 3
    assert {e.split("-")[1] for e in entries} == {"byte", "char", "bpe"}
    assert len({n for n, _ in seen.values()}) == 3  # really different tokenizations
    load_dataset(dataclasses.replace(base, tokenizer="bpe", bpe_vocab_size=280))  # other BPE settings
    assert len(_entries(tmp_path)) == 4


def test_token_cache_is_keyed_by_corpus_and_split(tmp_path, corpus_file, corpus):
    cfg = DataConfig(source=f"files:{corpus_file}", tokenizer="byte", cache_dir=str(tmp_path))
    load_dataset(cfg)
    load_dataset(dataclasses.replace(cfg, val_fraction=0.2))
    assert len(_entries(tmp_path)) == 2
    corpus_file.write_text(corpus.upper(), encoding="utf-8")  # same file name, new text
    ds = load_dataset(cfg)
    assert len(_entries(tmp_path)) == 3
    assert ds.tokenizer.decode(ds.train) + ds.tokenizer.decode(ds.val) == corpus.upper()
    assert ds.tokenizer.decode(ds.val) == sources.split_text(corpus.upper(), 0.1)[1]


def test_cache_dir_defaults_to_lmjax_cache(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setenv("LMJAX_CACHE", str(tmp_path / "lmjax"))
    ds = load_dataset(DataConfig(source=f"files:{corpus_file}", tokenizer="byte"))
    assert len(_entries(tmp_path / "lmjax" / "data")) == 1
    assert ds.train.filename.startswith(str(tmp_path / "lmjax" / "data" / "tokens"))


def test_pinned_tokenizer_is_used(tmp_path, corpus_file, corpus):
    pinned = tokenizers.CharTokenizer.from_text(corpus + "#$%")
    ds = load_dataset(DataConfig(source=f"files:{corpus_file}", tokenizer="char", cache_dir=str(tmp_path)),
                      tokenizer=pinned)
    assert ds.tokenizer is pinned and ds.vocab_size == len(set(corpus)) + 3
    assert ds.tokenizer.decode(ds.train) + ds.tokenizer.decode(ds.val) == corpus


def test_empty_and_too_short_corpora_are_data_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match="empty"):
        load_dataset(DataConfig(source=f"files:{empty}", cache_dir=str(tmp_path / "c")))
    short = tmp_path / "short.txt"
    short.write_text("a")
    with pytest.raises(DataError, match="too short"):
        load_dataset(DataConfig(source=f"files:{short}", cache_dir=str(tmp_path / "c")))
    assert _entries(tmp_path / "c") == []


def test_missing_files_are_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no files match"):
        load_dataset(DataConfig(source=f"files:{tmp_path}/nothing/*.txt", cache_dir=str(tmp_path / "c")))
