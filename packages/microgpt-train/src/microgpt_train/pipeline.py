"""Text to batches for a run: the tokenizer (trained once and cached in the run folder) and loaders."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jax

from microgpt_core.files import write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data import PackedLoader, Tokenizer, load_text_dataset, train_bpe
from microgpt_data.chats import load_chat_dataset
from microgpt_train.config import RunConfig

__all__ = ["cache_tokenizer", "make_loader", "resolve_tokenizer"]

TOKENIZER_DIR = "tokenizer"
BPE_SOURCE_FILE = "trained_for.json"  # in TOKENIZER_DIR: the data and size the cached BPE was made for


def resolve_tokenizer(run: RunConfig, run_dir: Path, *, log=print, warn=print, data: Any = None) -> Tokenizer:
    """The run's tokenizer: `run.tokenizer` (``tiktoken:NAME``, a tokenizer folder, or any name
    `microgpt_infer.load_tokenizer` takes: "default", a model or run folder, a Hub id), else the BPE
    cached in ``run_dir/tokenizer`` when it was trained for the same data and size (its
    `BPE_SOURCE_FILE` says what it was trained on), else a new BPE of `model.vocab_size` trained on
    the training split (`data`, when the caller has opened it already: it is not opened again).

    Every process trains the same BPE (training is deterministic). Nothing is written here: the run
    caches a new BPE with `cache_tokenizer` once it starts, so a run that fails before that leaves
    no trace. A BPE that comes out smaller than asked (a small corpus runs out of pairs to merge) is
    kept, with a warning: the model's unused ids are never targets, and decode as U+FFFD if ever
    sampled.
    """
    spec = run.tokenizer
    if spec.startswith("tiktoken:"):
        tokenizer = Tokenizer.from_tiktoken(spec.removeprefix("tiktoken:"))
    elif spec:  # a tokenizer folder, or any model name: "default", a model or run folder, a Hub id
        from microgpt_infer import load_tokenizer

        tokenizer = load_tokenizer(spec, log=warn)
    else:
        tokenizer = _run_bpe(run, run_dir, log=log, warn=warn, data=data)
    tokenizer.check_fits(
        run.model.vocab_size, f"--tokenizer {spec}" if spec else str(run_dir / TOKENIZER_DIR)
    )
    return tokenizer


def _run_bpe(run: RunConfig, run_dir: Path, *, log, warn, data: Any) -> Tokenizer:
    cache, source = run_dir / TOKENIZER_DIR, _bpe_source(run)
    stamp = cache / BPE_SOURCE_FILE
    if jax.process_index() == 0 and stamp.is_file():
        # Other processes retrain the same deterministic BPE rather than race process 0's write.
        cached = _read_source(stamp)
        if cached == source:
            return Tokenizer.load(cache)
        log(f"the BPE cached in {cache} was trained for {cached}; training a new one for {source}")
    log(f"training a {run.model.vocab_size}-token BPE on {run.data} ...")
    if data is None:
        data = load_text_dataset(run.data, "train", text_column=run.text_column)
    texts = (row["text"] for row in data)
    if run.tokenizer_documents:
        texts = itertools.islice(texts, run.tokenizer_documents)
    tokenizer = train_bpe(texts, run.model.vocab_size)
    reached, asked = tokenizer.vocab_size, run.model.vocab_size
    if reached < asked:
        warn(
            f"warning: the BPE reached only {reached} tokens of the {asked} asked ({run.data} has too "
            f"few distinct pairs to merge): {asked - reached} of the model's ids will never occur; "
            f"--vocab-size {reached} would match it"
        )
    return tokenizer


def cache_tokenizer(run: RunConfig, run_dir: Path, tokenizer: Tokenizer) -> Path | None:
    """Saves the run's own BPE in ``run_dir/tokenizer`` with what it was trained for (process 0;
    nothing for a tokenizer the run was given, or took from its `init_from` model); the folder
    written, or None."""
    if run.tokenizer or run.init_from or jax.process_index() != 0:
        return None
    cache, source = run_dir / TOKENIZER_DIR, _bpe_source(run)
    if _read_source(cache / BPE_SOURCE_FILE) == source:
        return None  # the cache it was read from
    tokenizer.save(cache)
    write_atomic(cache / BPE_SOURCE_FILE, (json.dumps(source, indent=2) + "\n").encode())
    return cache


def _bpe_source(run: RunConfig) -> dict:
    """What a run's BPE is trained for: a cached one is reused only for the same."""
    return {
        "data": run.data,
        "text_column": run.text_column,
        "documents": run.tokenizer_documents,
        "vocab_size": run.model.vocab_size,
    }


def _read_source(path: Path) -> dict | None:
    try:
        return read_json_object(path, error=ValueError)
    except ValueError:
        return None


def make_loader(
    run: RunConfig, tokenizer: Tokenizer, split: str, *, shuffle: bool = True, dataset: Any = None,
    encode: Any = None,
) -> PackedLoader:  # fmt: skip
    """This process's rows of the global batch, as (batch_size / process_count, T+1) int32 windows
    (with `encode`, a `chat_data.ChatEncoder`: (batch_size / process_count, 2, T+1), tokens and loss
    mask, over `run.data`'s conversations).

    Every process reads the whole data and builds the same global batch of `run.batch_size` rows
    (so the batches, and the loader's state, do not depend on the number of processes); process i
    returns rows [i * batch_size / process_count, (i + 1) * batch_size / process_count). `dataset`:
    the split, when the caller has opened it already.
    """
    if dataset is None and encode is not None:
        dataset = load_chat_dataset(run.data, split)
    elif dataset is None:
        dataset = load_text_dataset(run.data, split, text_column=run.text_column)
    return PackedLoader(
        dataset,
        tokenizer,
        batch_size=run.batch_size,
        seq_len=run.model.context_length,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        epochs=None,
        shuffle_buffer=run.shuffle_buffer if shuffle else 0,
        seed=run.seed,
        encode=encode,
    )
