"""Text to batches for a run: the tokenizer (trained once and cached in the run folder) and loaders."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax

from microgpt_data import PackedLoader, Tokenizer, load_text_dataset, train_bpe
from microgpt_train.config import RunConfig, RunConfigError

__all__ = ["make_loader", "resolve_tokenizer"]

TOKENIZER_DIR = "tokenizer"


def resolve_tokenizer(run: RunConfig, run_dir: Path, *, log=print) -> Tokenizer:
    """The run's tokenizer: `run.tokenizer` (a folder or ``tiktoken:NAME``), else the BPE cached in
    ``run_dir/tokenizer``, else a new BPE of `model.vocab_size` trained on the training split.

    Every process trains the same BPE (training is deterministic); process 0 writes the cache.
    """
    spec = run.tokenizer
    if spec.startswith("tiktoken:"):
        tokenizer = Tokenizer.from_tiktoken(spec.removeprefix("tiktoken:"))
    elif spec:
        tokenizer = Tokenizer.load(spec)
    elif jax.process_index() == 0 and (run_dir / TOKENIZER_DIR / "tokenizer_config.json").exists():
        # Other processes retrain the same deterministic BPE rather than race process 0's write.
        tokenizer = Tokenizer.load(run_dir / TOKENIZER_DIR)
    else:
        log(f"training a {run.model.vocab_size}-token BPE on {run.data} ...")
        texts = (row["text"] for row in load_text_dataset(run.data, "train", text_column=run.text_column))
        if run.tokenizer_documents:
            texts = itertools.islice(texts, run.tokenizer_documents)
        tokenizer = train_bpe(texts, run.model.vocab_size)
        if jax.process_index() == 0:
            tokenizer.save(run_dir / TOKENIZER_DIR)
    if tokenizer.vocab_size > run.model.vocab_size:
        raise RunConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but vocab_size is {run.model.vocab_size}: "
            f"set --vocab-size {tokenizer.vocab_size} or more"
        )
    return tokenizer


def make_loader(run: RunConfig, tokenizer: Tokenizer, split: str, *, shuffle: bool = True) -> PackedLoader:
    """This process's share of the global batch, as (batch_size / process_count, T+1) int32 windows."""
    rows = run.batch_size // jax.process_count()
    dataset = load_text_dataset(run.data, split, text_column=run.text_column)
    return PackedLoader(
        dataset,
        tokenizer,
        batch_size=rows,
        seq_len=run.model.context_length,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        epochs=None,
        shuffle_buffer=run.shuffle_buffer if shuffle else 0,
        seed=run.seed,
    )
