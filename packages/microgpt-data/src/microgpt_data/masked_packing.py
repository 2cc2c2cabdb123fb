"""Packing documents that carry a loss mask (chat: the loss counts on the assistant's tokens only).

`pack_masked` is `packing.pack_tokens` for documents given as (ids, mask) pairs, where mask[i] is 1
when token i is one a model learns to write (trained) and 0 otherwise. The stream holds two rows,
tokens and mask, cut into the same windows; a window of B rows of T+1 tokens then reads

    batch (B, 2, T+1):   batch[:, 0] the tokens w,  batch[:, 1] the mask m

and the loss at position t (predicting w[t+1] from w[..t]) counts when m[t+1] is 1:

    ℓ = Σ_{b,t} m[b, t+1] · (-log p(w[b, t+1] | w[b, ..t])) / Σ_{b,t} m[b, t+1]

One difference from plain packing: a document never straddles two rows when it fits in one. A
document (with its end-of-text) longer than what is left of its row starts the next row, and the
gap is filled with end-of-text tokens of mask 0, so every conversation of at most T tokens is seen
whole, with its own beginning as context. (A longer document is cut across rows; callers drop those.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["pack_masked"]


def pack_masked(
    carry: np.ndarray, documents: Iterable[tuple[Sequence[int], Sequence[int]]], eot_id: int, window: int,
    row: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One pure packing step over masked documents: `carry` (2, n) (tokens and mask not yet in a
    window), then each document's ids + `eot_id` (mask 0), cut into `window`-token windows.

    Args:
      carry: (2, n) int32, n < window: what the previous call left (`np.zeros((2, 0))` at first).
      documents: (ids, mask) pairs of equal lengths; mask values 0 or 1.
      eot_id: the end-of-text id after each document and in the gaps.
      window: tokens per window, a multiple of `row`.
      row: tokens per row (T+1): a document that fits in a row but not in what is left of the
        current one starts the next row.
    Returns:
      (windows (n, 2, window) int32, the new carry (2, < window) int32). Chaining calls over any
      split of the documents gives the windows of one call over all of them.
    """
    if window % row:
        raise ValueError(f"window ({window}) must be a multiple of row ({row})")
    parts = [np.asarray(carry, np.int32).reshape(2, -1)]  # (2, n)
    used = parts[0].shape[1]
    for ids, mask in documents:
        if len(ids) != len(mask):
            raise ValueError(f"a document has {len(ids)} ids but {len(mask)} mask values")
        doc = np.stack(
            [np.append(np.asarray(ids, np.int32), eot_id), np.append(np.asarray(mask, np.int32), 0)]
        )
        left = row - used % row  # tokens left in the current row
        if doc.shape[1] > left and left < row and doc.shape[1] <= row:  # it would straddle: next row
            parts.append(np.stack([np.full(left, eot_id, np.int32), np.zeros(left, np.int32)]))  # (2, left)
            used += left
        parts.append(doc.astype(np.int32))  # (2, len + 1)
        used += doc.shape[1]
    stream = np.concatenate(parts, axis=1)  # (2, used)
    full = stream.shape[1] // window
    windows = stream[:, : full * window].reshape(2, full, window).transpose(1, 0, 2)  # (n, 2, window)
    return np.ascontiguousarray(windows), stream[:, full * window :]
