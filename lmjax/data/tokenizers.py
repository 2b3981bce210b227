"""Tokenizers: byte, character, BPE (HF ``tokenizers``), SentencePiece.

All map text <-> int32 id arrays and can be saved into and loaded from a run directory, so that
sampling and scoring use exactly the training vocabulary. Bits per byte use each tokenizer's own
bytes per token on a split (see lmjax.data.dataset).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from lmjax.errors import DataError

FILE = "tokenizer.json"


class Tokenizer:
    kind: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-serializable description; identifies the tokenizer in cache keys."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.state(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, FILE), "w") as f:
            json.dump(self.state(), f)


class ByteTokenizer(Tokenizer):
    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")

    def state(self) -> dict:
        return {"kind": self.kind}


class CharTokenizer(Tokenizer):
    """One id per character of the training split, in sorted order."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.vocab_size = len(chars)
        self._index = {c: i for i, c in enumerate(chars)}
        self._lut = None
        if all(ord(c) < 65536 for c in chars):
            self._lut = np.full(65536, -1, np.int32)
            self._lut[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> np.ndarray:
        if self._lut is not None:
            codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
            if codes.size and codes.max() < 65536:
                ids = self._lut[codes]
                if (ids >= 0).all():
                    return ids
        unknown = sorted(set(text) - set(self._index))
        if unknown:
            shown = "".join(unknown[:20])
            raise DataError(f"text has {len(unknown)} character(s) outside the character vocabulary: {shown!r}")
        return np.array([self._index[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).tolist())

    def state(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained with HF ``tokenizers`` on the training split."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer as HFTokenizer

        self._json = tokenizer_json
        self._tok = HFTokenizer.from_str(tokenizer_json)
        self.vocab_size = self._tok.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise DataError(f"data.bpe_vocab_size must be >= 257 (256 bytes + merges), got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        chunk = 1 << 16
        tok.train_from_iterator((text[i:i + chunk] for i in range(0, len(text), chunk)), trainer=trainer)
        return cls(tok.to_str())

    def encode(self, text: str) -> np.ndarray:
        chunk = 1 << 20  # split long texts at newlines so encoding stays parallel and bounded
        pieces, start = [], 0
        while start < len(text):
            end = len(text) if len(text) - start <= chunk else text.rfind("\n", start, start + chunk) + 1
            end = end if end > start else min(len(text), start + chunk)
            pieces.append(text[start:end])
            start = end
        ids = [e.ids for e in self._tok.encode_batch(pieces)] if pieces else [[]]
        return np.concatenate([np.asarray(i, np.int32) for i in ids])

    def decode(self, ids) -> str:
        return self._tok.decode(np.asarray(ids).tolist())

    def state(self) -> dict:
        return {"kind": self.kind, "tokenizer_json": self._json}


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size()

    @classmethod
    def from_file(cls, path: str) -> "SentencePieceTokenizer":
        if not os.path.isfile(path):
            raise DataError(f"SentencePiece model file not found: {path}")
        with open(path, "rb") as f:
            return cls(f.read())

    def encode(self, text: str) -> np.ndarray:
        # One call on the whole text: encoding lines separately adds the model's dummy prefix
        # ("▁") to every line, which changes the ids and the round trip.
        return np.asarray(self._sp.encode(text), np.int32)

    def decode(self, ids) -> str:
        return self._sp.decode(np.asarray(ids).tolist())

    def state(self) -> dict:
        return {"kind": self.kind, "model_sha256": hashlib.sha256(self._proto).hexdigest(),
                "model_hex": self._proto.hex()}


def from_state(state: dict) -> Tokenizer:
    kind = state.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "bpe":
        return BPETokenizer(state["tokenizer_json"])
    if kind == "sentencepiece":
        return SentencePieceTokenizer(bytes.fromhex(state["model_hex"]))
    raise DataError(f"unknown tokenizer kind {kind!r}")


def load(directory: str) -> Tokenizer:
    path = os.path.join(directory, FILE)
    if not os.path.isfile(path):
        raise DataError(f"no {FILE} in {directory}")
    with open(path) as f:
        return from_state(json.load(f))
