"""Text sources: the embedded corpus, local files, TFDS datasets read without TensorFlow or network.

The TFDS datasets are built here, in-process, by GeneratorBasedBuilders with
file_format=array_record: in tensorflow-datasets 4.9 that needs neither TensorFlow nor the network
(examples are serialized in pure Python, GCS access is off by default, nothing is downloaded).
"""

import glob
import hashlib
import json
import os
import shutil
import socket
import time

import numpy as np
import pytest

from lmjax.config import DataConfig
from lmjax.data import sources
from lmjax.data.dataset import load_dataset
from lmjax.errors import DataError

TFDS_NAME = "lmjax_tiny_text"
TFDS_CONFIG_NAME = "lmjax_tiny_configs"


def _paragraphs(n: int) -> list[str]:
    paras = [p.strip("\n") for p in sources.embedded_text().split("\n\n")]
    return [p for p in paras if p.strip()][:n]


TFDS_TRAIN_DOCS = _paragraphs(24)[:20]
TFDS_TEST_DOCS = _paragraphs(24)[20:]


def _build_tfds(data_dir: str) -> None:
    import tensorflow_datasets as tfds

    class LmjaxTinyText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Two splits of plain text documents."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            # tfds.core.DatasetInfo directly: dataset_info_from_configs wants a package directory.
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "id": tfds.features.Scalar(dtype=np.int32)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(TFDS_TRAIN_DOCS),
                    "test": self._generate_examples(TFDS_TEST_DOCS)}

        def _generate_examples(self, docs):
            for i, doc in enumerate(docs):
                yield i, {"text": doc, "id": i}

    class LmjaxTinyConfigs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """One split, two configs: the same documents in upper or lower case."""

        VERSION = tfds.core.Version("2.1.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="upper"), tfds.core.BuilderConfig(name="lower")]

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"body": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, doc in enumerate(TFDS_TEST_DOCS):
                yield i, {"body": doc.upper() if self.builder_config.name == "upper" else doc.lower()}

    tfds.disable_progress_bar()
    mode = tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builders = [LmjaxTinyText(data_dir=data_dir, file_format="array_record")]
    builders += [LmjaxTinyConfigs(data_dir=data_dir, config=c, file_format="array_record")
                 for c in ("upper", "lower")]
    for builder in builders:
        builder.download_and_prepare(download_config=mode)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding lmjax_tiny_text:1.0.0 and lmjax_tiny_configs/{upper,lower}:2.1.0."""
    data_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as mp:  # building must not need the network either
        def refuse(*args, **kwargs):
            raise OSError("network access is disabled in lmjax's data tests")

        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        _build_tfds(str(data_dir))
    return str(data_dir)


# ---------------------------------------------------------------- embedded corpus and files

def test_embedded_corpus_is_tiny_shakespeare():
    text = sources.load_text("shakespeare")
    data = text.encode("utf-8")
    assert len(data) == 1_115_394
    assert hashlib.sha256(data).hexdigest() == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_files_glob_concatenates_matches_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second file", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file ✓", encoding="utf-8")
    (tmp_path / "c.md").write_text("not matched", encoding="utf-8")
    (tmp_path / "dir.txt").mkdir()  # a directory matching the pattern is skipped
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.txt").write_text("nested", encoding="utf-8")

    assert sources.load_text(f"files:{tmp_path}/*.txt") == "first file ✓\nsecond file"
    assert sources.load_text(f"files:{tmp_path}/**/*.txt") == "first file ✓\nsecond file\nnested"
    assert sources.load_text(f"files:{tmp_path}/b.txt") == "second file"


def test_missing_file_is_a_data_error_naming_the_pattern(tmp_path):
    pattern = str(tmp_path / "missing" / "*.txt")
    with pytest.raises(DataError, match="no files match") as e:
        sources.load_text(f"files:{pattern}")
    assert pattern in str(e.value)


@pytest.mark.parametrize("content", ["", "  \n\n\t \n"])
def test_empty_corpus_is_a_data_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        sources.load_text(f"files:{path}")


def test_non_utf8_file_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        sources.load_text(f"files:{path}")


def test_unknown_source_is_a_data_error():
    with pytest.raises(DataError, match="unknown data.source"):
        sources.load_text("wikipedia")


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_split_is_the_last_val_fraction(val_fraction):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000)) + "é" * 200
    train, val = sources.split_text(text, val_fraction)
    assert train + val == text
    assert val == text[len(text) - len(val):]
    assert abs(len(val) - val_fraction * len(text)) <= 1


def test_split_is_deterministic_and_the_val_part_is_the_tail(corpus):
    train1, val1 = sources.split_text(corpus, 0.1)
    train2, val2 = sources.split_text(corpus, 0.1)
    assert (train1, val1) == (train2, val2)
    assert corpus.endswith(val1) and corpus.startswith(train1)


# ---------------------------------------------------------------- TFDS

def _reference_text(data_dir, name, split, key="text"):
    """The documents as tfds.data_source itself reads them (the public API, download=False)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return "\n\n".join(source[i][key].decode("utf-8") for i in range(len(source)))


def test_tfds_fixture_is_array_record_without_tensorflow(tfds_dir):
    version_dir = os.path.join(tfds_dir, TFDS_NAME, "1.0.0")
    with open(os.path.join(version_dir, "dataset_info.json")) as f:
        assert json.load(f)["fileFormat"] == "array_record"
    assert glob.glob(os.path.join(version_dir, f"{TFDS_NAME}-train.array_record-*"))
    import sys

    assert "tensorflow" not in sys.modules


def test_tfds_load_text_reads_every_document(tfds_dir, no_network):
    text = sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir)
    assert sorted(text.split("\n\n")) == sorted(TFDS_TRAIN_DOCS)
    assert text == _reference_text(tfds_dir, TFDS_NAME, "train")
    assert sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir) == text  # deterministic order
    test = sources.load_text(f"tfds:{TFDS_NAME}:1.0.0", tfds_split="test", tfds_data_dir=tfds_dir)
    assert sorted(test.split("\n\n")) == sorted(TFDS_TEST_DOCS)
    assert not no_network


def test_tfds_split_slices_and_configs(tfds_dir):
    full = sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir)
    first = sources.load_text(f"tfds:{TFDS_NAME}", tfds_split="train[:3]", tfds_data_dir=tfds_dir)
    assert first == "\n\n".join(full.split("\n\n")[:3])
    upper = sources.load_text(f"tfds:{TFDS_CONFIG_NAME}/upper", tfds_data_dir=tfds_dir, tfds_text_key="body")
    lower = sources.load_text(f"tfds:{TFDS_CONFIG_NAME}/lower:2.*.*", tfds_data_dir=tfds_dir,
                              tfds_text_key="body")
    assert sorted(upper.split("\n\n")) == sorted(d.upper() for d in TFDS_TEST_DOCS)
    assert sorted(lower.split("\n\n")) == sorted(d.lower() for d in TFDS_TEST_DOCS)


def test_tfds_default_data_dir_is_tfds_data_dir_env(tfds_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
    assert sorted(sources.load_text(f"tfds:{TFDS_NAME}").split("\n\n")) == sorted(TFDS_TRAIN_DOCS)


def test_tfds_load_dataset_splits_and_tokenizes(tfds_dir, tmp_path):
    cfg = DataConfig(source=f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir, tokenizer="byte",
                     cache_dir=str(tmp_path / "cache"))
    ds = load_dataset(cfg)
    text = _reference_text(tfds_dir, TFDS_NAME, "train")
    train, val = sources.split_text(text, 0.1)
    assert ds.tokenizer.decode(ds.train) == train
    assert ds.tokenizer.decode(ds.val) == val
    ds_test = load_dataset(DataConfig(source=f"tfds:{TFDS_NAME}", tfds_split="test", tfds_data_dir=tfds_dir,
                                      tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    assert ds_test.tokenizer.decode(ds_test.train) + ds_test.tokenizer.decode(ds_test.val) == \
        _reference_text(tfds_dir, TFDS_NAME, "test")


@pytest.mark.parametrize("name, match", [
    ("lmjax_no_such_dataset", "not prepared"),
    (f"{TFDS_NAME}:9.0.0", "not prepared"),
    (f"{TFDS_NAME}/no_such_config", "not prepared"),
    ("huggingface:some_dataset", "not a TFDS name"),
    ("tiny_shakespeare", "not prepared"),  # a registered TFDS builder, not prepared here
    (TFDS_CONFIG_NAME, "has configs lower, upper"),
])
def test_tfds_missing_dataset_fails_fast_without_network(tfds_dir, no_network, name, match):
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=match):
        sources.load_text(f"tfds:{name}", tfds_data_dir=tfds_dir)
    assert time.perf_counter() - t0 < 5.0
    assert not no_network


def test_tfds_missing_data_dir(tmp_path, no_network):
    with pytest.raises(DataError, match="not prepared"):
        load_dataset(DataConfig(source=f"tfds:{TFDS_NAME}", tfds_data_dir=str(tmp_path / "nowhere"),
                                cache_dir=str(tmp_path / "cache")))
    assert not os.path.exists(tmp_path / "nowhere")  # nothing created where the data should be
    assert not no_network


def test_tfds_unknown_split_and_feature(tfds_dir):
    with pytest.raises(DataError, match="validation"):
        sources.load_text(f"tfds:{TFDS_NAME}", tfds_split="validation", tfds_data_dir=tfds_dir)
    with pytest.raises(DataError, match="no feature 'body'.*id, text"):
        sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir, tfds_text_key="body")
    with pytest.raises(DataError, match="not text"):
        sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=tfds_dir, tfds_text_key="id")


def test_tfds_tfrecord_dataset_names_the_fix(tfds_dir, tmp_path):
    """A dataset prepared as tfrecord (the tfds default) needs TensorFlow: say how to rebuild it."""
    data_dir = tmp_path / "tfds"
    shutil.copytree(os.path.join(tfds_dir, TFDS_NAME), data_dir / TFDS_NAME)
    info_path = data_dir / TFDS_NAME / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match="array_record"):
        sources.load_text(f"tfds:{TFDS_NAME}", tfds_data_dir=str(data_dir))
