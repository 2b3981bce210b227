"""Kneser-Ney n-gram benchmark on Tiny Shakespeare bytes (V = 256): counting speed and held-out loss.

    .venv/bin/python benchmarks/bench_ngram.py

Table 1: fit on the first 1M bytes at orders 3 and 5, score the last 100K bytes.
Table 2: 90/10 split, orders 1..6: held-out loss in nats/byte and bits/byte.
"""

from __future__ import annotations

import math
import time
from importlib import resources

import numpy as np

from lmjax.models.ngram import NGramConfig, NGramLM


def _load_bytes() -> np.ndarray:
    raw = resources.files("lmjax.data").joinpath("tinyshakespeare.txt").read_bytes()
    return np.frombuffer(raw, np.uint8)


def _fit_and_score(train: np.ndarray, test: np.ndarray, order: int) -> dict:
    cfg = NGramConfig(vocab_size=256, order=order)
    t0 = time.perf_counter()
    model = NGramLM.fit(train, cfg)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logprobs = model.sequence_logprobs(test, start=1)
    score_s = time.perf_counter() - t0
    loss_nats = float(-logprobs.mean())
    return {
        "order": order,
        "train_tokens": train.size,
        "fit_s": fit_s,
        "score_s": score_s,
        "scored_tokens": logprobs.size,
        "num_ngrams": model.num_ngrams,
        "loss_nats": loss_nats,
        "bpb": loss_nats / math.log(2),
    }


def _print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        f"{'order':>5} {'train_tok':>10} {'fit_s':>7} {'score_s':>8} {'score_tok/s':>12} "
        f"{'num_ngrams':>11} {'nats/byte':>10} {'bits/byte':>10}"
    )
    for r in rows:
        print(
            f"{r['order']:>5} {r['train_tokens']:>10,} {r['fit_s']:>7.2f} {r['score_s']:>8.3f} "
            f"{r['scored_tokens'] / r['score_s']:>12,.0f} {r['num_ngrams']:>11,} "
            f"{r['loss_nats']:>10.4f} {r['bpb']:>10.4f}"
        )


def main() -> None:
    data = _load_bytes()
    print(f"Tiny Shakespeare: {data.size:,} bytes, {np.unique(data).size} distinct byte values")

    train, test = data[:1_000_000], data[-100_000:]
    rows = [_fit_and_score(train, test, order) for order in (3, 5)]
    _print_table("Fit on the first 1M bytes, score the last 100K bytes", rows)

    split = int(0.9 * data.size)
    train, val = data[:split], data[split:]
    rows = [_fit_and_score(train, val, order) for order in range(1, 7)]
    _print_table(f"90/10 split: train {train.size:,} bytes, validation {val.size:,} bytes", rows)
    counts = np.bincount(train, minlength=256)
    p = counts[counts > 0] / train.size
    print(f"\nreference: empirical unigram entropy of the training bytes {-(p * np.log(p)).sum():.4f} nats")


if __name__ == "__main__":
    main()
