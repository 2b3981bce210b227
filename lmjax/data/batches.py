"""Batches as pure functions of (seed, step, process): resuming needs no iterator state.

Training batches are random windows of T + 1 tokens (inputs and shifted targets) drawn with a
counter-based generator seeded by (seed, step); each process takes its rows of the global batch.
Stateful (truncated BPTT) batches give each row a contiguous stream that advances by T per step.
Evaluation covers the split with non-overlapping windows, padded and masked to a fixed shape.
"""

from __future__ import annotations

import numpy as np

from lmjax.errors import DataError


def _rows(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise DataError(f"global batch {global_batch} is not divisible by {process_count} processes")
    per = global_batch // process_count
    return slice(process_index * per, (process_index + 1) * per)


def usable_tokens(tokens: np.ndarray, train_tokens: int) -> np.ndarray:
    """The prefix of the split that training may see (data.train_tokens; 0 = all)."""
    return tokens[:train_tokens] if train_tokens else tokens


def train_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int, seq_len: int,
                process_index: int = 0, process_count: int = 1, rows: slice | None = None) -> np.ndarray:
    """Rows of the global batch for this process (or the given ``rows``): int32 (B_local, T + 1)."""
    n = len(tokens)
    if n < seq_len + 1:
        raise DataError(f"the context ({seq_len}) is longer than the training tokens available ({n} - 1)")
    rng = np.random.Generator(np.random.Philox(key=[seed, step]))
    rows = rows if rows is not None else _rows(batch_size, process_index, process_count)
    starts = rng.integers(0, n - seq_len, size=batch_size)[rows]
    return np.stack([np.asarray(tokens[s:s + seq_len + 1]) for s in starts]).astype(np.int32)


def stream_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int, seq_len: int,
                 process_index: int = 0, process_count: int = 1, rows: slice | None = None) -> np.ndarray:
    """Truncated-BPTT batch: row b reads stream b at window ``step`` (wrapping around its stream).

    The split is cut into batch_size contiguous streams (rotated by a seed-dependent offset), so
    consecutive steps continue each row where the previous step stopped.
    """
    n = len(tokens)
    stream_len = (n - 1) // batch_size
    if stream_len < seq_len + 1:
        raise DataError(f"stateful batches need {batch_size} streams of at least {seq_len + 1} tokens; "
                        f"only {n} training tokens")
    windows = stream_len // seq_len
    offset = int(np.random.Generator(np.random.Philox(key=[seed, 0])).integers(0, n))
    w = step % windows
    out = []
    rows = rows if rows is not None else _rows(batch_size, process_index, process_count)
    for b in range(batch_size)[rows]:
        start = (offset + b * stream_len + w * seq_len) % n
        idx = (start + np.arange(seq_len + 1)) % n
        out.append(np.asarray(tokens[idx]))
    return np.stack(out).astype(np.int32)


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int = 0):
    """Yield (windows int32 (B, T + 1), mask float32 (B, T)) covering the split exactly once.

    Window i holds inputs tokens[iT : iT + T] and targets shifted by one. The last window is
    padded and the padding masked, and the last batch is padded with fully masked rows, so
    every batch has the same shape (one compiled program) and every target counts once.
    """
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise DataError("the validation split has fewer than 2 tokens")
    n_windows = -(-n_targets // seq_len)
    n_batches = -(-n_windows // batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    arr = np.asarray(tokens)
    for b in range(n_batches):
        windows = np.zeros((batch_size, seq_len + 1), np.int32)
        mask = np.zeros((batch_size, seq_len), np.float32)
        for r in range(batch_size):
            i = b * batch_size + r
            if i >= n_windows:
                break
            chunk = arr[i * seq_len: i * seq_len + seq_len + 1]
            windows[r, : len(chunk)] = chunk
            mask[r, : len(chunk) - 1] = 1.0
        yield windows, mask


def eval_streams(tokens: np.ndarray, seq_len: int, batch_size: int):
    """Yield (windows (B, T + 1), mask (B, T)) so that row b walks stream b of the split in order.

    The targets are cut into batch_size contiguous streams; a recurrent model carries its state
    from one window of a row to the next, and every target counts exactly once.
    """
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise DataError("the validation split has fewer than 2 tokens")
    stream_len = -(-n_targets // batch_size)
    arr = np.asarray(tokens)
    for w in range(-(-stream_len // seq_len)):
        windows = np.zeros((batch_size, seq_len + 1), np.int32)
        mask = np.zeros((batch_size, seq_len), np.float32)
        for b in range(batch_size):
            start = b * stream_len + w * seq_len
            stop = min((b + 1) * stream_len, n_targets, start + seq_len)  # last target index + 1
            if stop <= start:
                continue
            chunk = arr[start: stop + 1]
            windows[b, : len(chunk)] = chunk
            mask[b, : stop - start] = 1.0
        yield windows, mask
