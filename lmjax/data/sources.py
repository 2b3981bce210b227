"""Text sources: the embedded Tiny Shakespeare corpus, local text files (glob), TFDS datasets.

A source is named by a string: ``shakespeare``, ``files:<glob>`` or ``tfds:<name>[/<config>]``.
TFDS datasets are read as tfds data sources from their array_record files (no TensorFlow) and
never downloaded: prepare them first (``tfds build --file_format array_record``) into
data.tfds_data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import json
import os
import re

from lmjax.errors import DataError

EMBEDDED = "shakespeare"


def embedded_text() -> str:
    return importlib.resources.files("lmjax.data").joinpath("tinyshakespeare.txt").read_text("utf-8")


def files_text(pattern: str) -> str:
    paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise DataError(f"no files match data.source pattern {pattern!r}")
    parts = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                parts.append(f.read())
        except UnicodeDecodeError as e:
            raise DataError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return "\n".join(parts)


# name[/config][:version], as TFDS spells builder names (no namespaces: they live on remote hubs).
_TFDS_NAME = re.compile(r"^(?P<name>[a-zA-Z_][\w]*)(?:/(?P<config>[\w.\-]+))?"
                        r"(?::(?P<version>[\d*]+\.[\d*]+\.[\d*]+))?$")
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")
_RANDOM_ACCESS_FORMATS = ("array_record", "parquet")  # what tfds data sources can read


def tfds_default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def tfds_prepared_dir(name: str, data_dir: str) -> tuple[str, str]:
    """(directory of the prepared version, file format) of ``name`` in ``data_dir``, found locally.

    Looks only at the file system, so a dataset that is not there fails at once: no builder code
    is imported and nothing is downloaded or retried.
    """
    m = _TFDS_NAME.match(name)
    if not m:
        raise DataError(f"data.source 'tfds:{name}' is not a TFDS name of the form name[/config][:version]")
    base = os.path.join(data_dir, m["name"], *([m["config"]] if m["config"] else []))
    build_name = m["name"] + (f"/{m['config']}" if m["config"] else "")
    hint = (f"prepare it with `tfds build {build_name} --data_dir {data_dir} --file_format array_record` "
            f"or set data.tfds_data_dir")
    versions = []
    if os.path.isdir(base):
        versions = [v for v in os.listdir(base) if _VERSION_DIR.match(v)
                    and os.path.isfile(os.path.join(base, v, "dataset_info.json"))]
    if m["version"]:
        pattern = re.compile("^" + re.escape(m["version"]).replace(r"\*", r"\d+") + "$")
        versions = [v for v in versions if pattern.match(v)]
    if not versions:
        configs = []
        if not m["config"] and os.path.isdir(base):
            configs = sorted(c for c in os.listdir(base) if os.path.isdir(os.path.join(base, c))
                             and any(_VERSION_DIR.match(v) for v in os.listdir(os.path.join(base, c))))
        if configs:
            raise DataError(f"TFDS dataset {name!r} in {data_dir} has configs {', '.join(configs)}; "
                            f"name one, e.g. data.source='tfds:{m['name']}/{configs[0]}'")
        raise DataError(f"TFDS dataset {name!r} is not prepared in {data_dir} "
                        f"(no {os.path.join(base, m['version'] or '<version>', 'dataset_info.json')}); {hint}")
    version_dir = os.path.join(base, max(versions, key=_version_key))
    try:
        with open(os.path.join(version_dir, "dataset_info.json")) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {version_dir}/dataset_info.json: {e}") from None
    formats = [info.get("fileFormat", "tfrecord")] + list(info.get("alternativeFileFormats", []))
    usable = [f for f in _RANDOM_ACCESS_FORMATS if f in formats]
    if not usable:
        raise DataError(f"TFDS dataset {name!r} in {version_dir} is stored as {', '.join(formats)}, which "
                        f"cannot be read without TensorFlow; rebuild it with --file_format array_record")
    return version_dir, usable[0]


def tfds_text(name: str, split: str, data_dir: str, text_key: str) -> str:
    """The ``text_key`` feature of every example of a prepared TFDS split, joined by blank lines.

    Reads the array_record (or parquet) files through a tfds data source built from the prepared
    directory itself (tfds.builder_from_directory), without TensorFlow and without the network.
    """
    data_dir = os.path.expanduser(data_dir or tfds_default_data_dir())
    version_dir, file_format = tfds_prepared_dir(name, data_dir)
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(version_dir, file_format=file_format)
        source = builder.as_data_source(split=split)
    except Exception as e:  # unknown split, damaged files, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"TFDS dataset {name!r} (split {split!r}) in {version_dir}: {first}") from None
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    if text_key not in keys:
        raise DataError(f"TFDS dataset {name!r} has no feature {text_key!r} (data.tfds_text_key); "
                        f"features: {', '.join(sorted(keys))}")
    texts, chunk = [], 1024
    for start in range(0, len(source), chunk):
        for record in source.__getitems__(range(start, min(start + chunk, len(source)))):
            value = record[text_key]
            if isinstance(value, bytes):
                texts.append(value.decode("utf-8"))
            elif isinstance(value, str):
                texts.append(value)
            else:
                raise DataError(f"TFDS feature {text_key!r} of {name!r} is not text "
                                f"(got {type(value).__name__}); set data.tfds_text_key to a text feature")
    return "\n\n".join(texts)


def load_text(source: str, *, tfds_split="train", tfds_data_dir="", tfds_text_key="text") -> str:
    """The full text of a source; raises DataError for a missing or empty source."""
    if source == EMBEDDED:
        text = embedded_text()
    elif source.startswith("files:"):
        text = files_text(source[len("files:"):])
    elif source.startswith("tfds:"):
        text = tfds_text(source[len("tfds:"):], tfds_split, tfds_data_dir, tfds_text_key)
    else:
        raise DataError(f"unknown data.source {source!r}; use 'shakespeare', 'files:<glob>' or 'tfds:<name>'")
    if not text.strip():
        raise DataError(f"data.source {source!r} is empty")
    return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Deterministic split: the last ``val_fraction`` of the characters is validation."""
    cut = int(len(text) * (1.0 - val_fraction))  # as nanoGPT: data[:int(n * 0.9)]
    return text[:cut], text[cut:]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
