"""PackedLoader: (B, T+1) int32 windows that are the token stream, split across processes, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import EmptyDatasetError, LoaderConfigError, LoaderStateError, PackedLoader, pack_windows

texts_strategy = st.lists(st.text(max_size=40), min_size=1, max_size=16)


def stream_of(tokenizer, texts) -> np.ndarray:
    """The documented token stream: each document's ids, then EOT."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eot_id]
    return np.asarray(ids, np.int32)


def rank_texts(dataset, rank: int, count: int) -> list[str]:
    from datasets.distributed import split_dataset_by_node

    return [row["text"] for row in split_dataset_by_node(dataset, rank=rank, world_size=count)]


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


@given(texts_strategy, st.integers(1, 4), st.integers(1, 3), st.integers(1, 6))
def test_processes_split_the_stream_without_loss_or_repeat(
    make_dataset, small_tokenizer, texts, count, batch, seq
):
    dataset, need = make_dataset(texts), batch * (seq + 1)
    per_rank = [rank_texts(dataset, rank, count) for rank in range(count)]
    assert sorted(t for rank in per_rank for t in rank) == sorted(texts)  # each document on one process
    for rank, mine in enumerate(per_rank):
        stream = stream_of(small_tokenizer, mine)
        loader = PackedLoader(
            dataset,
            small_tokenizer,
            batch_size=batch,
            seq_len=seq,
            process_index=rank,
            process_count=count,
            epochs=1,
        )
        if len(stream) < need:
            with pytest.raises(EmptyDatasetError):
                drain(loader)
            continue
        flat = np.concatenate([b.reshape(-1) for b in drain(loader)])
        # This process's windows are exactly its own documents' stream, minus a remainder < one batch.
        assert len(flat) == len(stream) // need * need
        assert np.array_equal(flat, stream[: len(flat)])


@given(texts_strategy, st.integers(1, 3), st.integers(1, 6), st.integers(0, 5), st.integers(0, 99))
def test_shuffled_processes_keep_their_documents(
    make_dataset, small_tokenizer, texts, count, seq, shuffle, seed
):
    dataset, need = make_dataset(texts), seq + 1
    for rank in range(count):
        mine = rank_texts(dataset, rank, count)
        stream = stream_of(small_tokenizer, mine)
        if len(stream) < need:
            continue
        loader = PackedLoader(
            dataset,
            small_tokenizer,
            batch_size=1,
            seq_len=seq,
            process_index=rank,
            process_count=count,
            epochs=1,
            shuffle_buffer=shuffle,
            seed=seed,
        )
        flat = np.concatenate([b.reshape(-1) for b in drain(loader)]).tolist()
        assert len(flat) == len(stream) // need * need
        pieces, current = [], []
        for token in flat:
            if token == small_tokenizer.eot_id:
                pieces.append(small_tokenizer.decode(current))
                current = []
            else:
                current.append(token)
        remaining = list(mine)
        for piece in pieces:  # every complete document is one of this process's, used once
            remaining.remove(piece)


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
        if len(stream_of(small_tokenizer, rank_texts(dataset, rank, count))) < 12:
            continue
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
    ],
)
def test_bad_arguments(make_dataset, small_tokenizer, small_texts, kwargs, match):
    with pytest.raises(LoaderConfigError, match=match):
        PackedLoader(make_dataset(small_texts[:1]), small_tokenizer, **kwargs)


def test_not_a_dataset(make_dataset, small_tokenizer):
    with pytest.raises(LoaderConfigError, match="got list"):
        PackedLoader(["a", "b"], small_tokenizer, batch_size=1, seq_len=4)
    body = make_dataset(["a"]).rename_column("text", "body")
    with pytest.raises(LoaderConfigError, match=r"no 'text' column \(it has \['body'\]\)"):
        PackedLoader(body, small_tokenizer, batch_size=1, seq_len=4)


def test_empty_data_and_too_little_data(make_dataset, small_tokenizer):
    with pytest.raises(EmptyDatasetError, match="got no documents in epoch 0"):
        next(PackedLoader(make_dataset([]), small_tokenizer, batch_size=1, seq_len=4))
    with pytest.raises(EmptyDatasetError, match="fewer than one batch of 8 x 65 = 520"):
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
