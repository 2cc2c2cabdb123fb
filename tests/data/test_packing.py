"""PackedLoader: (B, T+1) int32 windows that are the token stream; every process builds the same global
batch and returns its own rows; resumable exactly, on any number of processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import (
    DataError,
    DataSourceError,
    LoaderStateError,
    PackedLoader,
    pack_tokens,
    pack_windows,
)

texts_strategy = st.lists(st.text(max_size=40), min_size=1, max_size=16)


def stream_of(tokenizer, texts) -> np.ndarray:
    """The documented token stream: each document's ids, then EOT."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eot_id]
    return np.asarray(ids, np.int32)


def drain(loader) -> list[np.ndarray]:
    with loader:
        return list(loader)


@given(st.lists(st.lists(st.integers(0, 99), max_size=12), max_size=10), st.integers(1, 9))
def test_pack_windows_is_the_stream_in_order(documents, window):
    stream = [t for doc in documents for t in [*doc, 100]]
    windows = list(pack_windows(documents, 100, window))
    flat = [int(t) for w in windows for t in w]
    assert all(w.shape == (window,) and w.dtype == np.int32 for w in windows)
    assert flat == stream[: len(flat)] and len(stream) - len(flat) < window


def test_batches_are_int32_windows_of_the_stream(make_dataset, small_tokenizer, small_texts):
    texts = small_texts[:8]
    batches = drain(PackedLoader(make_dataset(texts), small_tokenizer, batch_size=4, seq_len=16, epochs=1))
    assert batches and all(b.shape == (4, 17) and b.dtype == np.int32 for b in batches)
    flat = np.concatenate([b.reshape(-1) for b in batches])
    stream = stream_of(small_tokenizer, texts)
    assert np.array_equal(flat, stream[: len(flat)])
    assert len(stream) - len(flat) < 4 * 17  # the documented remainder: less than one batch


@given(
    st.lists(st.lists(st.integers(0, 99), max_size=12), max_size=10),
    st.lists(st.integers(0, 10), max_size=4),
    st.integers(1, 9),
)
def test_pack_tokens_chained_over_any_split_is_one_call(documents, cuts, window):
    """The loader packs chunk by chunk with `pack_tokens`; chaining it is the pure `pack_windows`."""
    bounds = sorted({min(c, len(documents)) for c in cuts} | {0, len(documents)})
    carry, windows = np.zeros(0, np.int32), []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        got, carry = pack_tokens(carry, documents[lo:hi], 100, window)
        assert got.dtype == carry.dtype == np.int32 and got.shape[1:] == (window,) and len(carry) < window
        windows += list(got)
    expected = list(pack_windows(documents, 100, window))
    assert len(windows) == len(expected) and all(
        np.array_equal(a, b) for a, b in zip(windows, expected, strict=True)
    )


def global_batches(dataset, tokenizer, count: int, **options) -> list[np.ndarray]:
    """Each process's batches, drained, then joined row-wise step by step (asserting every process
    returned the same number of steps, each with batch_size / count rows, and the same state)."""
    per_rank, states = [], []
    for rank in range(count):
        with PackedLoader(dataset, tokenizer, process_index=rank, process_count=count, **options) as loader:
            per_rank.append(list(loader))
            states.append(loader.state_dict())
    assert len({len(batches) for batches in per_rank}) == 1  # finite epochs end at the same step
    assert all(state == states[0] for state in states)
    rows = options["batch_size"] // count
    assert all(b.shape == (rows, options["seq_len"] + 1) for batches in per_rank for b in batches)
    return [np.concatenate(step) for step in zip(*per_rank, strict=True)]


@given(
    texts_strategy,
    st.sampled_from([2, 3, 4]),
    st.integers(1, 2),
    st.integers(1, 6),
    st.sampled_from([0, 3]),
    st.integers(0, 99),
)
def test_the_processes_rows_at_each_step_are_the_single_process_batch(
    make_dataset, small_tokenizer, texts, count, rows, seq, shuffle, seed
):
    """The global batch depends on data, seed, step and global batch size only: P processes' rows,
    joined, are one process's batch at every step (it used to read a different share per process)."""
    dataset = make_dataset([t + " some padding words" for t in texts])
    options = dict(batch_size=count * rows, seq_len=seq, epochs=2, shuffle_buffer=shuffle, seed=seed)
    single = global_batches(dataset, small_tokenizer, 1, **options)
    joined = global_batches(dataset, small_tokenizer, count, **options)
    assert single and len(joined) == len(single)
    assert all(np.array_equal(a, b) for a, b in zip(joined, single, strict=True))


@pytest.mark.parametrize("shuffle", [0, 4])
@pytest.mark.parametrize(("before", "after"), [(1, 2), (1, 4), (2, 1), (4, 2)])
def test_a_state_resumes_on_another_process_count(
    make_dataset, small_tokenizer, small_texts, shuffle, before, after
):
    """The state is the global stream's (no process index or count in it): saved by P processes, it
    continues the same global batches on Q."""
    dataset = make_dataset(small_texts[:6])
    options = dict(batch_size=4, seq_len=15, shuffle_buffer=shuffle, seed=5)
    with PackedLoader(dataset, small_tokenizer, **options) as unbroken:
        expected = take(unbroken, 12)
    states = []
    for rank in range(before):
        with PackedLoader(
            dataset, small_tokenizer, process_index=rank, process_count=before, **options
        ) as first:
            head = take(first, 5)
            states.append(json.loads(json.dumps(first.state_dict())))
            assert all(
                np.array_equal(h, e[rank * 4 // before : (rank + 1) * 4 // before])
                for h, e in zip(head, expected, strict=False)
            )
    assert all(state == states[0] for state in states)
    assert "process_index" not in states[0]["loader"] and "process_count" not in states[0]["loader"]
    tails = []
    for rank in range(after):
        with PackedLoader(
            dataset, small_tokenizer, process_index=rank, process_count=after, **options
        ) as resumed:
            resumed.load_state_dict(states[0])
            tails.append(take(resumed, 7))
            assert resumed.batches_returned == 12
    joined = [np.concatenate(step) for step in zip(*tails, strict=True)]
    assert all(np.array_equal(a, b) for a, b in zip(joined, expected[5:], strict=True))


def test_the_global_batch_must_split_over_the_processes(make_dataset, small_tokenizer, small_texts):
    with pytest.raises(
        DataError,
        match="batch_size is the global batch and must be a multiple of process_count: 6 rows do not split",
    ):
        PackedLoader(make_dataset(small_texts[:1]), small_tokenizer, batch_size=6, seq_len=8, process_count=4)


def take(loader, n: int) -> list[np.ndarray]:
    return [b for _, b in zip(range(n), loader, strict=False)]


@given(texts_strategy, st.integers(0, 6), st.sampled_from([None, 1, 2]), st.integers(1, 2), st.integers(0, 9))
def test_resume_is_exact_at_every_k(make_dataset, small_tokenizer, texts, shuffle, epochs, count, seed):
    texts = [t + " padding text" for t in texts]  # enough tokens for a few batches per epoch
    dataset = make_dataset(texts)
    options = dict(
        batch_size=2, seq_len=5, shuffle_buffer=shuffle, seed=seed, epochs=epochs, process_count=count
    )
    horizon = 14  # batches compared (an endless loader is cut here)
    for rank in range(count):
        with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as unbroken:
            expected = take(unbroken, horizon)
        for k in range(len(expected) + 1):
            with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as first:
                head = take(first, k)
                state = json.loads(json.dumps(first.state_dict()))  # survives JSON (checkpoint metadata)
            with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as resumed:
                resumed.load_state_dict(state)
                tail = take(resumed, horizon - k)
                assert resumed.batches_returned == k + len(tail)
            got = head + tail
            assert len(got) == len(expected), k
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), k


def test_state_after_the_end_stays_finished(make_dataset, small_tokenizer, small_texts):
    dataset = make_dataset(small_texts[:3])
    loader = PackedLoader(dataset, small_tokenizer, batch_size=2, seq_len=32, epochs=1)
    assert drain(loader)
    again = PackedLoader(dataset, small_tokenizer, batch_size=2, seq_len=32, epochs=1)
    again.load_state_dict(loader.state_dict())
    assert list(again) == []


def test_close_and_continue_equals_unbroken(make_dataset, small_tokenizer, small_texts):
    dataset = make_dataset(small_texts[:6])
    kwargs = dict(batch_size=3, seq_len=20, shuffle_buffer=4, seed=3)
    expected = [b for _, b in zip(range(12), PackedLoader(dataset, small_tokenizer, **kwargs), strict=False)]
    loader = PackedLoader(dataset, small_tokenizer, **kwargs)
    got = [next(loader) for _ in range(5)]
    loader.close()
    got += [next(loader) for _ in range(7)]
    loader.close()
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_epochs_repeat_the_data_in_a_new_order(make_dataset, small_tokenizer):
    texts = [f"document {i} " * 3 for i in range(40)]
    dataset = make_dataset(texts)
    one = drain(PackedLoader(dataset, small_tokenizer, batch_size=1, seq_len=7, epochs=1, shuffle_buffer=40))
    two = drain(PackedLoader(dataset, small_tokenizer, batch_size=1, seq_len=7, epochs=2, shuffle_buffer=40))
    total = len(stream_of(small_tokenizer, texts))
    assert len(one) == total // 8 and len(two) == 2 * total // 8
    assert not all(np.array_equal(a, b) for a, b in zip(one, two[len(one) :], strict=False))


def test_state_from_another_loader_is_refused(make_dataset, small_tokenizer, small_texts):
    dataset = make_dataset(small_texts[:2])
    state = PackedLoader(dataset, small_tokenizer, batch_size=2, seq_len=8).state_dict()
    other = PackedLoader(dataset, small_tokenizer, batch_size=4, seq_len=8)
    with pytest.raises(LoaderStateError, match="batch_size: saved 2, this loader 4"):
        other.load_state_dict(state)
    with pytest.raises(LoaderStateError, match="version"):
        other.load_state_dict({"version": 0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0, "seq_len": 8}, "batch_size must be an integer >= 1, got 0"),
        (
            {"batch_size": 2, "seq_len": 8, "process_index": 2, "process_count": 2},
            r"process_index must be in \[0, 2\)",
        ),
        ({"batch_size": 2, "seq_len": 8, "epochs": 0}, "epochs must be None"),
        ({"batch_size": 2, "seq_len": 8, "shuffle_buffer": -1}, "shuffle_buffer must be an integer >= 0"),
        ({"batch_size": True, "seq_len": 8}, "batch_size must be an integer >= 1, got True"),
        ({"batch_size": 2, "seq_len": 8, "process_index": True}, r"process_index must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(make_dataset, small_tokenizer, small_texts, kwargs, match):
    with pytest.raises(DataError, match=match):
        PackedLoader(make_dataset(small_texts[:1]), small_tokenizer, **kwargs)


def test_numpy_integer_arguments_are_ints(make_dataset, small_tokenizer, small_texts):
    loader = PackedLoader(
        make_dataset(small_texts[:2]), small_tokenizer, batch_size=np.int64(2), seq_len=np.int32(8),
        epochs=np.int64(1), seed=np.uint32(3),
    )  # fmt: skip
    json.dumps(loader.state_dict())  # the state holds Python ints
    assert (type(loader.batch_size), type(loader.epochs), type(loader.seed)) == (int, int, int)


def test_not_a_dataset(make_dataset, small_tokenizer):
    with pytest.raises(DataError, match="got list"):
        PackedLoader(["a", "b"], small_tokenizer, batch_size=1, seq_len=4)
    body = make_dataset(["a"]).rename_column("text", "body")
    with pytest.raises(DataError, match=r"no 'text' column \(it has \['body'\]\)"):
        PackedLoader(body, small_tokenizer, batch_size=1, seq_len=4)


def test_empty_data_and_too_little_data(make_dataset, small_tokenizer):
    with pytest.raises(DataSourceError, match="^the dataset: no documents in epoch 0: it is empty"):
        next(PackedLoader(make_dataset([]), small_tokenizer, batch_size=1, seq_len=4))
    with pytest.raises(DataSourceError, match="fewer than one batch of 8 x 65 = 520"):
        next(PackedLoader(make_dataset(["tiny"]), small_tokenizer, batch_size=8, seq_len=64, epochs=1))


def test_map_style_dataset_and_pydocs(make_dataset, small_tokenizer):
    import datasets

    from microgpt_data import load_text_dataset, pydocs_texts

    table = datasets.Dataset.from_dict({"text": ["alpha beta", "gamma delta"] * 10})
    assert drain(PackedLoader(table, small_tokenizer, batch_size=2, seq_len=4, epochs=1))
    loader = PackedLoader(
        load_text_dataset("pydocs", "validation"), small_tokenizer, batch_size=4, seq_len=64
    )
    batch = next(loader)
    loader.close()
    first = small_tokenizer.decode(batch[0].tolist())
    assert first in pydocs_texts("validation")[0]


@pytest.mark.parametrize("count", [1, 2])
def test_resume_through_local_files_and_the_split_filter(small_tokenizer, tmp_path, count):
    """Arrow-backed JSON shards behind the validation filter resume exactly too."""
    from microgpt_data import load_text_dataset

    for shard in range(3):
        rows = [{"text": f"shard {shard} row {i} " + "words " * (i % 5), "id": i} for i in range(120)]
        (tmp_path / f"part{shard}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_text_dataset(tmp_path, "train")
    options = dict(batch_size=2, seq_len=15, shuffle_buffer=3, seed=1, epochs=2, process_count=count)
    for rank in range(count):
        with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as unbroken:
            expected = list(unbroken)
        for k in (0, 1, 7, len(expected) // 2, len(expected) - 1, len(expected)):
            with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as first:
                head = take(first, k)
                state = json.loads(json.dumps(first.state_dict()))
            with PackedLoader(dataset, small_tokenizer, process_index=rank, **options) as resumed:
                resumed.load_state_dict(state)
                got = head + list(resumed)
            assert len(got) == len(expected)
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), k


@pytest.mark.parametrize("split", ["train", "validation"])
def test_a_one_paragraph_file_packs_alike_on_any_process_count(small_tokenizer, tmp_path, split):
    """A file of one document is split by position (it gave one empty split, and "no documents"): each
    split is the stream of its piece, the same for every process count, and resumes exactly."""
    from microgpt_data import load_text_dataset

    (path := tmp_path / "story.txt").write_text("A short story on one line, told in plain words. " * 40)
    dataset = load_text_dataset(path, split)
    options = dict(batch_size=2, seq_len=3, epochs=1)
    single = global_batches(dataset, small_tokenizer, 1, **options)
    assert single and all(
        np.array_equal(a, b)
        for a, b in zip(global_batches(dataset, small_tokenizer, 2, **options), single, strict=True)
    )
    stream = stream_of(small_tokenizer, [row["text"] for row in dataset])
    assert np.array_equal(np.concatenate(single).reshape(-1), stream[: len(single) * 8])
    with PackedLoader(dataset, small_tokenizer, **options) as first:
        head = take(first, 2)
        state = json.loads(json.dumps(first.state_dict()))
    with PackedLoader(dataset, small_tokenizer, **options) as resumed:
        resumed.load_state_dict(state)
        assert all(np.array_equal(a, b) for a, b in zip(head + list(resumed), single, strict=True))


def test_an_empty_split_names_the_hub_dataset(fake_hub, monkeypatch, make_dataset, small_tokenizer):
    """A Hub dataset cannot be read ahead, so its split is by hash alone: two documents in train."""
    import zlib

    import datasets

    from microgpt_data import load_text_dataset

    fake_hub(200)
    documents = [t for t in (f"document {i}" for i in range(9)) if zlib.crc32(t.encode()) % 20][:2]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: make_dataset(documents))
    loader = PackedLoader(
        load_text_dataset("org/name", "validation"), small_tokenizer, batch_size=1, seq_len=4
    )
    with pytest.raises(
        DataSourceError,
        match=r"^Hub dataset org/name \(validation split; 1 in 20 .*\): no documents in epoch 0",
    ):
        next(loader)


def test_too_little_text_names_the_file(small_tokenizer, tmp_path):
    from microgpt_data import load_text_dataset

    (path := tmp_path / "tiny.txt").write_text("only a few words here")
    loader = PackedLoader(load_text_dataset(path), small_tokenizer, batch_size=8, seq_len=64, epochs=1)
    with pytest.raises(
        DataSourceError, match=r"tiny.txt \(train split\): 1 epoch\(s\) gave \d+ tokens, fewer"
    ):
        next(loader)


def test_a_read_error_of_another_kind_becomes_a_data_source_error(small_tokenizer):
    import datasets

    def broken():
        yield {"text": "fine words"}
        raise RuntimeError("the disk is gone")

    dataset = datasets.IterableDataset.from_generator(
        broken, features=datasets.Features({"text": datasets.Value("string")})
    )
    loader = PackedLoader(dataset, small_tokenizer, batch_size=1, seq_len=4)
    with pytest.raises(DataSourceError, match=r"^the dataset: cannot read: RuntimeError: the disk is gone"):
        next(loader)
