"""A deterministic, resumable shuffle buffer over a stream of documents.

``datasets``' own ``shuffle(buffer_size=...)`` loses its buffer when a stream is resumed, so the
loader keeps its own: a buffer of `size` documents; each step draws index
``splitmix64(seed, epoch, draw) mod len(buffer)``, yields that document and puts the next one from
the source in its place. The whole state is a small dict (the buffered documents, a draw counter,
whether the source ran dry), updated in place as documents are drawn, so a copy taken between two
draws continues the same sequence exactly. Different epochs draw different orders.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["shuffled", "draw_index"]

_MASK = (1 << 64) - 1
_END = object()


def _splitmix64(x: int) -> int:
    """Steele, Lea & Flood's SplitMix64 finaliser: a well-mixed 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def draw_index(seed: int, epoch: int, draw: int, n: int) -> int:
    """A deterministic index in [0, n) for the `draw`-th pick of `epoch`."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ epoch) ^ draw) % n


def shuffled(source: Iterator[str], state: dict, *, size: int, seed: int) -> Iterator[str]:
    """Documents of `source` in shuffled order (dataset order when `size` is 0).

    `state` holds ``epoch``, ``buffer`` (a list), ``draws`` and ``source_done``; it is updated in
    place. `source` must continue from where ``state`` was taken (the caller restores the dataset).
    """
    buffer = state["buffer"]
    while not state["source_done"] and len(buffer) < size:  # fill (or refill after a resume)
        text = next(source, _END)
        if text is _END:
            state["source_done"] = True
        else:
            buffer.append(text)
    while True:
        if not buffer:
            if state["source_done"]:
                return
            text = next(source, _END)
            if text is _END:
                state["source_done"] = True
                return
            yield text  # size == 0: dataset order
            continue
        j = draw_index(seed, state["epoch"], state["draws"], len(buffer))
        state["draws"] += 1
        text = buffer[j]
        incoming = _END if state["source_done"] else next(source, _END)
        if incoming is _END:
            state["source_done"] = True
            buffer[j] = buffer[-1]
            buffer.pop()
        else:
            buffer[j] = incoming
        yield text
