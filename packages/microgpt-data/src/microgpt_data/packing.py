"""`PackedLoader`: documents -> token ids + EOT -> fixed ``(B, T+1)`` int32 windows, resumable exactly.

The pipeline, the same on every process::

    dataset (the whole of it, in the dataset's order)
            --shuffle buffer (own, seeded by seed, epoch)--> documents in shuffled order
            --tokenizer.encode_batch--> ids per document
            --pack_tokens: + EOT after each, cut into B*(T+1)-token windows--> the global (B, T+1) batch
            --rows [i*B/P, (i+1)*B/P) of it--> what process i of P returns

Windows do not overlap: every token of the stream lands in exactly one window, in order (row b of a
batch continues where row b-1 ended); train on ``x = w[:, :-1]``, ``y = w[:, 1:]``. Documents run
across window and batch boundaries, and the stream runs on across epochs; when the last epoch ends,
the tokens that do not fill a whole batch (fewer than B*(T+1)) are dropped: the documented remainder.

The global batch at every step is a function of the data, the seed, the step and the global batch
size B alone: every process reads the whole stream (same shuffle, same packing) and builds the same
global batch, then keeps its own B/P rows. So 1 process x 4 devices and 2 processes x 2 devices
train on the same batches, finite epochs end at the same step everywhere, and the state is the same
on every process. (Each process tokenizes the whole stream: P times the work, which the loader's
margin over training, hundreds of times, easily pays.)

With `encode` (chat data: `microgpt_train.chat_data`), each document is turned into ids and a loss
mask by that function (None leaves it out), packed by `masked_packing.pack_masked`, and the loader
yields ``(B/P, 2, T+1)`` windows: tokens, then the mask (1 where the loss counts).

`state_dict()` describes the loader *after the last batch it returned* (the prefetch thread may be
ahead; each batch carries its own state). A loader given that state by `load_state_dict`, on any
number of processes, returns exactly the global batches an unbroken one would. The state is
JSON-serialisable: the dataset's position (``IterableDataset.state_dict``), the shuffle buffer's
documents (``datasets``' own shuffle buffer does not survive a resume, hence ours:
`microgpt_data.shuffle`), and the leftover tokens.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from microgpt_core.config import is_integer
from microgpt_data.errors import DataError, DataSourceError, InvalidTextError, LoaderStateError
from microgpt_data.masked_packing import pack_masked
from microgpt_data.shuffle import shuffled
from microgpt_data.sources import source_label
from microgpt_data.tokenizer import Tokenizer

__all__ = ["PackedLoader", "pack_tokens", "pack_windows", "STATE_VERSION"]

STATE_VERSION = 2  # 2: the state of the global stream, the same on every process


def pack_tokens(
    carry: np.ndarray, documents: Iterable[Sequence[int]], eot_id: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pure packing step: the tokens `carry` (not yet in a window), then each document's ids +
    `eot_id`, cut into as many consecutive `window`-token windows as fit.

    Returns:
      (windows (n, window) int32, the new carry (< window tokens) int32). Chaining calls over any
      split of the documents gives the windows of one call over all of them.
    """
    flat: list[int] = []
    for ids in documents:
        flat.extend(ids)
        flat.append(eot_id)
    stream = np.concatenate([np.asarray(carry, np.int32), np.asarray(flat, np.int32)])  # (len,)
    full = len(stream) // window
    return stream[: full * window].reshape(full, window), stream[full * window :]  # (n, window), (<window,)


def pack_windows(documents: Iterable[Sequence[int]], eot_id: int, window: int) -> Iterator[np.ndarray]:
    """The pure packing function: each document's ids + `eot_id`, concatenated, cut into consecutive
    non-overlapping int32 windows of `window` tokens (`pack_tokens`, one document at a time). A final
    partial window is dropped. `PackedLoader` packs the same way, with ``window = B * (T + 1)``."""
    carry = np.zeros(0, np.int32)
    for ids in documents:
        windows, carry = pack_tokens(carry, [ids], eot_id, window)
        yield from windows


@dataclasses.dataclass(frozen=True)
class _State:
    """Where the stream stands after a batch: everything needed to continue it exactly."""

    epoch: int = 0
    dataset: dict | None = None  # IterableDataset.state_dict(); None: start of the epoch
    buffer: tuple[str, ...] = ()  # the shuffle buffer's documents
    draws: int = 0  # documents drawn from the shuffle buffer this epoch
    source_done: bool = False  # the dataset has no more documents this epoch
    carry: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    batches: int = 0  # batches returned so far
    finished: bool = False  # all epochs done


class PackedLoader:
    """An iterator of ``(batch_size / process_count, seq_len + 1)`` int32 numpy arrays over a text
    dataset: this process's rows of each global ``(batch_size, seq_len + 1)`` batch.

    Args:
      dataset: a ``datasets.IterableDataset`` (or ``Dataset``) with a ``text`` column, e.g. from
        `microgpt_data.load_text_dataset`. Resuming needs the same data again (same spec and split).
        Errors start with the name `load_text_dataset` gave it (``data.txt (train split): ...``),
        else with "the dataset".
      tokenizer: the `Tokenizer`; its `eot_id` ends every document.
      batch_size: B, rows of the *global* batch (all processes together); a multiple of
        `process_count`.
      seq_len: T; each row holds T+1 tokens (inputs and shifted targets).
      process_index, process_count: this process's rank i and the number of processes P (e.g.
        ``jax.process_index()``, ``jax.process_count()``). Every process reads the whole data and
        builds the same global batch; process i returns its rows ``[i*B/P, (i+1)*B/P)``, shape
        ``(B/P, T+1)``.
      epochs: passes over the data; ``None`` repeats forever. Finite epochs end at the same step on
        every process (they all read the same stream).
      shuffle_buffer: documents held for shuffling (0: dataset order).
      seed: the shuffle seed.
      tokenize_batch: the most documents encoded per `Tokenizer.encode_batch` call (fewer are
        read when fewer fill the next batch, which keeps the leftover tokens in the state small).
      prefetch: batches prepared ahead by the background thread.
      encode: for documents with a loss mask: ``encode(text) -> (ids, mask)``, or None to leave the
        document out; the loader then yields ``(B/P, 2, T+1)`` windows (tokens, mask), and a document
        that fits in a row of T+1 tokens never straddles two (`masked_packing.pack_masked`). It runs
        on the loader's thread. None: ``tokenizer.encode`` of the text, (B/P, T+1) windows.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        seq_len: int,
        process_index: int = 0,
        process_count: int = 1,
        epochs: int | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        tokenize_batch: int = 64,
        prefetch: int = 4,
        encode: Callable[[str], tuple[Sequence[int], Sequence[int]] | None] | None = None,
    ) -> None:
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("seq_len", seq_len, 1),
            ("process_count", process_count, 1),
            ("shuffle_buffer", shuffle_buffer, 0),
            ("tokenize_batch", tokenize_batch, 1),
            ("prefetch", prefetch, 1),
            ("seed", seed, 0),
        ):
            if not is_integer(value) or value < low:
                raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
        if not is_integer(process_index) or not 0 <= process_index < process_count:
            raise DataError(f"process_index must be in [0, {process_count}), got {process_index!r}")
        if batch_size % process_count:
            raise DataError(
                f"batch_size is the global batch and must be a multiple of process_count: "
                f"{batch_size} rows do not split over {process_count} processes (each returns "
                f"batch_size / process_count rows)"
            )
        if epochs is not None and (not is_integer(epochs) or epochs < 1):
            raise DataError(f"epochs must be None (forever) or an integer >= 1, got {epochs!r}")
        from datasets import Dataset

        self._source = source_label(dataset) or "the dataset"
        if isinstance(dataset, Dataset):
            dataset = dataset.to_iterable_dataset(num_shards=min(64, max(1, len(dataset))))
        if not hasattr(dataset, "state_dict"):
            raise DataError(
                f"dataset must be a datasets.IterableDataset or Dataset, got {type(dataset).__name__}"
            )
        if dataset.column_names is not None and "text" not in dataset.column_names:
            raise DataError(
                f"dataset has no 'text' column (it has {dataset.column_names}); rename it, or load it "
                "with load_text_dataset(spec, split, text_column=...)"
            )
        # The whole dataset, on every process, through a private copy of its example iterable
        # (`shard(1, 0)`): iterations of one IterableDataset object share their position, so two
        # loaders over the same dataset (train and eval, or a resumed one beside its original)
        # would otherwise move each other's place.
        self._dataset = dataset.shard(num_shards=1, index=0)
        self._start = self._dataset.state_dict()
        self._tokenizer = tokenizer
        # Numpy integers pass the checks above; the loader keeps Python ints (its state is JSON).
        batch_size, seq_len = int(batch_size), int(seq_len)
        process_index, process_count = int(process_index), int(process_count)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.process_index, self.process_count = process_index, process_count
        self._rows = slice(
            process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count
        )
        self.epochs = None if epochs is None else int(epochs)
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)
        self._tokenize_batch, self._prefetch = int(tokenize_batch), int(prefetch)
        self._masked_encode = encode
        self._state = _State(carry=self._empty())
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> PackedLoader:
        return self

    def __next__(self) -> np.ndarray:
        if self._state.finished:
            raise StopIteration
        if self._thread is None:
            self._stop = threading.Event()
            self._queue = queue.Queue(maxsize=self._prefetch)
            self._thread = threading.Thread(
                target=self._produce,
                args=(self._state, self._queue, self._stop),
                name="packed-loader",
                daemon=True,
            )
            self._thread.start()
        kind, batch, state = self._queue.get()
        if kind == "error":
            self.close()
            raise batch
        self._state = state
        if kind == "end":
            self.close()
            raise StopIteration
        return batch

    def close(self) -> None:
        """Stops the prefetch thread (a later `next` restarts it from `state_dict()`)."""
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            self._thread = None
            self._queue = None

    def __enter__(self) -> PackedLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    # ------------------------------------------------------------------ the producer thread
    def _documents(self, state: dict) -> Iterator[str]:
        """This epoch's documents (from the dataset position in `state`) through the shuffle buffer."""
        self._dataset.load_state_dict(state["dataset"] or self._start)
        return shuffled(self._texts(), state, size=self.shuffle_buffer, seed=self.seed)

    def _texts(self) -> Iterator[str]:
        """The dataset's texts; an error of reading them that is not a `DataError` names the source."""
        examples = iter(self._dataset)
        while True:
            try:
                example = next(examples)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as exc:  # e.g. a JSON row that cannot be parsed
                raise DataSourceError(f"{self._source}: cannot read: {type(exc).__name__}: {exc}") from exc
            yield example["text"]

    def _encode(self, texts: list[str]) -> list:
        """Each text's ids, or with `encode` the (ids, mask) of each text it keeps."""
        try:
            if self._masked_encode is None:
                return self._tokenizer.encode_batch(texts)
            return [doc for doc in map(self._masked_encode, texts) if doc is not None]
        except InvalidTextError as exc:
            raise InvalidTextError(f"{self._source}: {exc}") from None

    def _empty(self) -> np.ndarray:
        return np.zeros((2, 0) if self._masked_encode else 0, np.int32)

    def _pack(self, carry: np.ndarray, documents: list, need: int) -> tuple[np.ndarray, np.ndarray]:
        eot = self._tokenizer.eot_id
        if self._masked_encode is None:
            return pack_tokens(carry, documents, eot, need)  # (n, need), (< need,)
        return pack_masked(carry, documents, eot, need, self.seq_len + 1)  # (n, 2, need), (2, < need)

    def _batch(self, window: np.ndarray) -> np.ndarray:
        """This process's rows of one global window: (B/P, T+1), or (B/P, 2, T+1) with a mask."""
        if self._masked_encode is None:
            return window.reshape(self.batch_size, self.seq_len + 1)[self._rows]
        return window.reshape(2, self.batch_size, self.seq_len + 1).transpose(1, 0, 2)[self._rows]

    def _produce(self, start: _State, out: queue.Queue, stop: threading.Event) -> None:
        def put(item: tuple) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            need = self.batch_size * (self.seq_len + 1)
            st = dataclasses.asdict(start)
            st["buffer"] = list(start.buffer)
            windows, carry = self._pack(start.carry, [], need)  # full batches left by a resume
            docs_read, tokens_read = 0, 0
            while not stop.is_set() and (self.epochs is None or st["epoch"] < self.epochs):
                docs = self._documents(st)
                seen = st["draws"] > 0 or st["dataset"] is not None
                pulled = False  # until the first pull, the dataset's live state is not this epoch's
                while not stop.is_set():
                    for j, window in enumerate(windows):  # each window is one global batch
                        st["batches"] += 1
                        if pulled:
                            st["dataset"] = self._dataset.state_dict()
                        later = windows[j + 1 :]  # not yet returned: these, then the carry
                        later = later.transpose(1, 0, 2).reshape(2, -1) if later.ndim == 3 else later.ravel()
                        rest = np.concatenate([later, carry], axis=-1)
                        snapshot = _State(**{**st, "buffer": tuple(st["buffer"]), "carry": rest})
                        if not put(("batch", self._batch(window), snapshot)):
                            return
                    # Encode about as many documents as the next batch needs (at least 1, at most
                    # tokenize_batch), so the leftover tokens kept in the state stay small.
                    per_doc = max(1.0, tokens_read / docs_read) if docs_read else need
                    want = min(self._tokenize_batch, max(1, int((need - len(carry)) / per_doc) + 1))
                    chunk = [text for _, text in zip(range(want), docs, strict=False)]
                    pulled = True
                    if not chunk:
                        windows = windows[:0]
                        break
                    encoded = self._encode(chunk)
                    seen = seen or bool(encoded)
                    docs_read += len(chunk)
                    tokens_read += sum(len(doc[0] if self._masked_encode else doc) + 1 for doc in encoded)
                    windows, carry = self._pack(carry, encoded, need)  # (n, [2,] B*(T+1)), ([2,] < need)
                if stop.is_set():
                    return
                if not seen:
                    why = "every one was left out" if self._masked_encode else "it is empty"
                    raise DataSourceError(f"{self._source}: no documents in epoch {st['epoch']}: {why}")
                st.update(epoch=st["epoch"] + 1, dataset=None, buffer=[], draws=0, source_done=False)
            if st["batches"] == 0:
                raise DataSourceError(
                    f"{self._source}: {self.epochs} epoch(s) gave {carry.shape[-1]} tokens, fewer than one "
                    f"batch of {self.batch_size} x {self.seq_len + 1} = {need}; use a smaller "
                    "batch_size/seq_len"
                )
            put(("end", None, _State(**{**st, "buffer": (), "carry": carry.copy(), "finished": True})))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", exc, None))

    # ------------------------------------------------------------------ state
    def _fingerprint(self) -> dict:
        return {
            "batch_size": self.batch_size,  # global: the state is the same on every process
            "seq_len": self.seq_len,
            "shuffle_buffer": self.shuffle_buffer,
            "seed": self.seed,
            "epochs": self.epochs,
            "vocab_size": self._tokenizer.vocab_size,
            "eot_id": self._tokenizer.eot_id,
            **({"masked": True} if self._masked_encode else {}),
        }

    @property
    def batches_returned(self) -> int:
        """How many batches this loader (or the one whose state it loaded) has returned."""
        return self._state.batches

    def state_dict(self) -> dict:
        """A JSON-serialisable description of the position after the last returned batch; the same on
        every process, whatever their number."""
        s = self._state
        return {
            "version": STATE_VERSION,
            "loader": self._fingerprint(),
            "epoch": s.epoch,
            "dataset": s.dataset,
            "buffer": list(s.buffer),
            "draws": s.draws,
            "source_done": s.source_done,
            "carry": base64.b64encode(s.carry.astype("<i4").tobytes()).decode("ascii"),
            "batches": s.batches,
            "finished": s.finished,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continues from `state` (from `state_dict` of a loader built with the same arguments; the
        process index and count may differ: the state is that of the global stream)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise LoaderStateError(
                f"not a PackedLoader state of version {STATE_VERSION} (got version {got!r}; version 1 "
                "states described one process's share of the data and cannot continue the global stream)"
            )
        saved, mine = state.get("loader", {}), self._fingerprint()
        wrong = [
            f"{k}: saved {saved.get(k)!r}, this loader {mine.get(k)!r}"
            for k in {**mine, **saved}  # "masked" is in one of them only for a masked loader's state
            if saved.get(k) != mine.get(k)
        ]
        if wrong:
            raise LoaderStateError("the state belongs to a loader built differently: " + "; ".join(wrong))
        try:
            carry = np.frombuffer(base64.b64decode(state["carry"]), "<i4").astype(np.int32)
            carry = carry.reshape(2, -1) if self._masked_encode else carry  # tokens, then the mask
            new = _State(
                epoch=int(state["epoch"]),
                dataset=state["dataset"],
                buffer=tuple(state["buffer"]),
                draws=int(state["draws"]),
                source_done=bool(state["source_done"]),
                carry=carry,
                batches=int(state["batches"]),
                finished=bool(state["finished"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LoaderStateError(f"malformed PackedLoader state ({type(exc).__name__}: {exc})") from None
        self.close()
        self._state = new
