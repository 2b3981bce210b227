"""Tokenized train / validation splits, cached as memory-mapped arrays.

The cache key is the source's text hash + the split + the tokenizer's fingerprint, so any
change of corpus or tokenizer gives a fresh cache entry and nothing stale is ever reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from lmjax.data import sources, tokenizers
from lmjax.errors import DataError
from lmjax.jax_setup import cache_dir


@dataclasses.dataclass
class Dataset:
    tokenizer: tokenizers.Tokenizer
    train: np.ndarray  # int32 token ids (memmap)
    val: np.ndarray
    train_bytes_per_token: float
    val_bytes_per_token: float

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def _cache_root(data_cfg) -> str:
    root = data_cfg.cache_dir or os.path.join(cache_dir(), "data")
    os.makedirs(root, exist_ok=True)
    return root


def _atomic_save(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def build_tokenizer(data_cfg, train_text: str, text_key: str) -> tokenizers.Tokenizer:
    kind = data_cfg.tokenizer
    if kind == "byte":
        return tokenizers.ByteTokenizer()
    if kind == "char":
        return tokenizers.CharTokenizer.from_text(train_text)
    if kind == "sentencepiece":
        if not data_cfg.spm_model:
            raise DataError("data.tokenizer='sentencepiece' needs data.spm_model (a .model file)")
        return tokenizers.SentencePieceTokenizer.from_file(data_cfg.spm_model)
    if kind == "bpe":  # cached by corpus hash + settings: training BPE takes seconds
        path = os.path.join(_cache_root(data_cfg), "bpe", f"{text_key}-v{data_cfg.bpe_vocab_size}.json")
        if os.path.isfile(path):
            with open(path) as f:
                return tokenizers.BPETokenizer(f.read())
        tok = tokenizers.BPETokenizer.train(train_text, data_cfg.bpe_vocab_size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(tok.state()["tokenizer_json"])
        os.replace(tmp, path)
        return tok
    raise DataError(f"unknown data.tokenizer {kind!r}")


def load_dataset(data_cfg, tokenizer: tokenizers.Tokenizer | None = None) -> Dataset:
    """Load (or tokenize and cache) the splits. ``tokenizer`` pins a saved run's vocabulary."""
    text = sources.load_text(data_cfg.source, tfds_split=data_cfg.tfds_split,
                             tfds_data_dir=data_cfg.tfds_data_dir, tfds_text_key=data_cfg.tfds_text_key)
    train_text, val_text = sources.split_text(text, data_cfg.val_fraction)
    if not train_text or not val_text:
        raise DataError(f"data.source {data_cfg.source!r} is too short to split "
                        f"(val_fraction={data_cfg.val_fraction}, {len(text)} characters)")
    text_key = hashlib.sha256(f"{sources.text_hash(text)}:{len(train_text)}".encode()).hexdigest()[:16]
    tok = tokenizer or build_tokenizer(data_cfg, train_text, text_key)
    entry = os.path.join(_cache_root(data_cfg), "tokens", f"{text_key}-{tok.kind}-{tok.fingerprint()}")
    os.makedirs(entry, exist_ok=True)
    meta_path = os.path.join(entry, "meta.json")
    if not os.path.isfile(meta_path):
        meta = {}
        for name, split in (("train", train_text), ("val", val_text)):
            ids = tok.encode(split)
            if len(ids) and (ids.min() < 0 or ids.max() >= tok.vocab_size):
                raise DataError(f"tokenizer produced ids outside [0, {tok.vocab_size})")
            _atomic_save(os.path.join(entry, f"{name}.npy"), ids.astype(np.int32))
            meta[name] = {"tokens": int(len(ids)), "bytes": len(split.encode("utf-8"))}
        _atomic_json(meta_path, meta)
    with open(meta_path) as f:
        meta = json.load(f)
    train = np.load(os.path.join(entry, "train.npy"), mmap_mode="r")
    val = np.load(os.path.join(entry, "val.npy"), mmap_mode="r")
    bpt = {k: meta[k]["bytes"] / max(meta[k]["tokens"], 1) for k in ("train", "val")}
    return Dataset(tok, train, val, bpt["train"], bpt["val"])
