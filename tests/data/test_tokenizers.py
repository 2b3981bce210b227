"""Tokenizers: byte, char, BPE (HF tokenizers), SentencePiece: round trips, errors, bytes per token."""

import io

import numpy as np
import pytest

from lmjax.config import DataConfig
from lmjax.data import dataset as dataset_lib, sources, tokenizers
from lmjax.data.dataset import load_dataset
from lmjax.errors import DataError

# Text that no tokenizer saw in training: repeated spaces, blank lines, leading spaces, non-ASCII.
UNSEEN = "Hello  world\n\n   indented\ttab\nnaïve café — 日本語 ✓ 🙂\nend\n"


def train_spm(text: str, path, **settings) -> str:
    """A tiny SentencePiece model trained in-process on ``text``; returns the .model path."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()), model_writer=model,
                                   vocab_size=400, model_type="bpe", character_coverage=1.0, minloglevel=2,
                                   **settings)
    path.write_bytes(model.getvalue())
    return str(path)


# Lossless settings: no normalization, whitespace kept, unknown characters as bytes. With
# add_dummy_prefix (the default, as in LLaMA's tokenizer) a leading "▁" is added to the text.
LOSSLESS = dict(normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=True)


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory, corpus):
    d = tmp_path_factory.mktemp("spm")
    text = corpus
    return {"no_prefix": train_spm(text, d / "no_prefix.model", add_dummy_prefix=False, **LOSSLESS),
            "dummy_prefix": train_spm(text, d / "dummy_prefix.model", add_dummy_prefix=True, **LOSSLESS)}


def _roundtrip(tok, text):
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert ids.size == 0 or (0 <= ids.min() and ids.max() < tok.vocab_size)
    assert tok.decode(ids) == text
    return ids


# ---------------------------------------------------------------- byte

def test_byte_tokenizer_round_trip():
    tok = tokenizers.ByteTokenizer()
    assert tok.vocab_size == 256
    ids = _roundtrip(tok, UNSEEN)
    assert ids.tolist() == list(UNSEEN.encode("utf-8"))
    _roundtrip(tok, "")


# ---------------------------------------------------------------- char

def test_char_vocab_is_sorted_characters_of_the_text(corpus):
    tok = tokenizers.CharTokenizer.from_text(corpus)
    assert tok.chars == "".join(sorted(set(corpus)))
    assert tok.vocab_size == len(set(corpus))
    ids = _roundtrip(tok, corpus)
    assert ids[0] == tok.chars.index(corpus[0])


def test_char_shakespeare_vocab_is_65():
    assert tokenizers.CharTokenizer.from_text(sources.embedded_text()).vocab_size == 65


def test_char_round_trip_beyond_the_basic_plane():
    tok = tokenizers.CharTokenizer.from_text("ab🙂c日")
    _roundtrip(tok, "🙂a日bc🙂")


@pytest.mark.parametrize("text, shown", [("abcz", "z"), ("abc 🙂", "🙂"), ("ab\nc", "\\n")])
def test_char_unknown_character_is_a_clear_error(text, shown):
    tok = tokenizers.CharTokenizer.from_text("abc ")
    with pytest.raises(DataError, match="outside the character vocabulary") as e:
        tok.encode(text)
    assert shown in str(e.value)


def test_char_unknown_character_in_validation_split_is_a_data_error(tmp_path):
    text = "abab " * 200 + "abQ"  # 'Q' appears only in the last 10%
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(DataError, match="'Q'"):
        load_dataset(DataConfig(source=f"files:{path}", tokenizer="char", cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------- BPE

def test_bpe_round_trip_and_vocab_size(corpus):
    tok = tokenizers.BPETokenizer.train(corpus, 300)
    assert tok.vocab_size == 300
    ids = _roundtrip(tok, corpus)
    assert len(ids) < len(corpus.encode("utf-8")) * 0.8  # merges compress
    _roundtrip(tok, UNSEEN)  # byte-level: any text, even characters never seen
    _roundtrip(tok, "")


def test_bpe_vocab_below_bytes_is_a_data_error(corpus):
    with pytest.raises(DataError, match="bpe_vocab_size"):
        tokenizers.BPETokenizer.train(corpus, 200)


def test_bpe_vocab_size_honoured_and_cache_reused(tmp_path, corpus_file, monkeypatch):
    calls = []
    real_train = tokenizers.BPETokenizer.train.__func__

    def counting_train(cls, text, vocab_size):
        calls.append(vocab_size)
        return real_train(cls, text, vocab_size)

    monkeypatch.setattr(tokenizers.BPETokenizer, "train", classmethod(counting_train))
    cfg = DataConfig(source=f"files:{corpus_file}", tokenizer="bpe", bpe_vocab_size=320,
                     cache_dir=str(tmp_path / "cache"))
    ds = load_dataset(cfg)
    assert ds.vocab_size == 320 and int(ds.train.max()) < 320
    assert calls == [320]
    ds2 = load_dataset(cfg)  # same corpus and settings: the cached tokenizer, no training
    assert calls == [320]
    assert ds2.tokenizer.fingerprint() == ds.tokenizer.fingerprint()
    assert np.array_equal(ds2.train, ds.train)
    ds3 = load_dataset(DataConfig(**{**cfg.__dict__, "bpe_vocab_size": 300}))  # new settings: retrain
    assert calls == [320, 300] and ds3.vocab_size == 300
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text() + "one more line\n")
    load_dataset(DataConfig(**{**cfg.__dict__, "source": f"files:{other}"}))  # new corpus: retrain
    assert calls == [320, 300, 320]


def test_bpe_is_trained_on_the_training_split_only(tmp_path):
    train_part = "abc abd abe " * 300
    val_part = "xyzxyzxyzxyz" * 30  # would be merged into long tokens if BPE saw it
    path = tmp_path / "t.txt"
    path.write_text(train_part + val_part)
    ds = load_dataset(DataConfig(source=f"files:{path}", tokenizer="bpe", bpe_vocab_size=300,
                                 val_fraction=len(val_part) / len(train_part + val_part),
                                 cache_dir=str(tmp_path / "c")))
    assert ds.tokenizer.decode(ds.val) == val_part
    assert len(ds.val) == len(val_part)  # no merges of x, y, z: one token per byte


# ---------------------------------------------------------------- SentencePiece

@pytest.mark.parametrize("kind", ["no_prefix", "dummy_prefix"])
def test_sentencepiece_round_trip(spm_models, corpus, kind):
    tok = tokenizers.SentencePieceTokenizer.from_file(spm_models[kind])
    assert tok.vocab_size == 400
    _roundtrip(tok, corpus)
    _roundtrip(tok, UNSEEN)


@pytest.mark.parametrize("kind", ["no_prefix", "dummy_prefix"])
def test_sentencepiece_ids_match_the_model(spm_models, corpus, kind):
    """lmjax's encoding is the model's own encoding of the text (same tokens, same count)."""
    import sentencepiece as spm

    tok = tokenizers.SentencePieceTokenizer.from_file(spm_models[kind])
    sp = spm.SentencePieceProcessor(model_file=spm_models[kind])
    text = corpus[:3000]
    assert tok.encode(text).tolist() == sp.encode(text)


def test_sentencepiece_missing_model_is_a_data_error(tmp_path, corpus_file):
    with pytest.raises(DataError, match="not found"):
        tokenizers.SentencePieceTokenizer.from_file(str(tmp_path / "nope.model"))
    with pytest.raises(DataError, match="spm_model"):
        load_dataset(DataConfig(source=f"files:{corpus_file}", tokenizer="sentencepiece",
                                cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------- all four

def _data_cfg(kind, corpus_file, tmp_path, spm_models):
    return DataConfig(source=f"files:{corpus_file}", tokenizer=kind, bpe_vocab_size=300,
                      spm_model=spm_models["no_prefix"] if kind == "sentencepiece" else "",
                      cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("kind", ["byte", "char", "bpe", "sentencepiece"])
def test_bytes_per_token_is_split_bytes_over_split_tokens(kind, tmp_path, corpus_file, corpus, spm_models):
    ds = load_dataset(_data_cfg(kind, corpus_file, tmp_path, spm_models))
    train, val = sources.split_text(corpus, 0.1)
    assert ds.tokenizer.kind == kind
    assert ds.tokenizer.decode(ds.train) == train and ds.tokenizer.decode(ds.val) == val
    assert ds.train_bytes_per_token == len(train.encode("utf-8")) / len(ds.train)
    assert ds.val_bytes_per_token == len(val.encode("utf-8")) / len(ds.val)
    if kind == "byte":
        assert ds.train_bytes_per_token == 1.0
    else:  # multi-byte characters or merges: more than one byte per token
        assert ds.train_bytes_per_token > 1.0


@pytest.mark.parametrize("kind", ["byte", "char", "bpe", "sentencepiece"])
def test_save_and_load_reproduce_the_tokenizer(kind, tmp_path, corpus_file, corpus, spm_models):
    ds = load_dataset(_data_cfg(kind, corpus_file, tmp_path, spm_models))
    run = tmp_path / "run"
    run.mkdir()
    ds.tokenizer.save(str(run))
    loaded = tokenizers.load(str(run))
    assert loaded.kind == kind and loaded.vocab_size == ds.vocab_size
    assert loaded.fingerprint() == ds.tokenizer.fingerprint()
    assert np.array_equal(loaded.encode(corpus), ds.tokenizer.encode(corpus))


def test_fingerprints_differ_between_tokenizers(corpus, spm_models):
    toks = [tokenizers.ByteTokenizer(), tokenizers.CharTokenizer.from_text(corpus),
            tokenizers.CharTokenizer.from_text(corpus + "#"), tokenizers.BPETokenizer.train(corpus, 280),
            tokenizers.SentencePieceTokenizer.from_file(spm_models["no_prefix"]),
            tokenizers.SentencePieceTokenizer.from_file(spm_models["dummy_prefix"])]
    assert len({t.fingerprint() for t in toks}) == len(toks)


def test_load_without_tokenizer_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="tokenizer.json"):
        tokenizers.load(str(tmp_path))


def test_unknown_tokenizer_kind_is_a_data_error():
    with pytest.raises(DataError, match="wordpiece"):
        dataset_lib.build_tokenizer(DataConfig(tokenizer="wordpiece"), "text", "key")
