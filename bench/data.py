"""microgpt-data benchmark: tokenizer, BPE training and the packing loader, as one JSON line.

    uv run python bench/data.py                 # everything (about a minute on 2 cores)
    uv run python bench/data.py --repeats 5 --loader-batches 400

Measured on the built-in `pydocs` corpus (all documents, train + validation), this machine's CPU:

  corpus     size in UTF-8 bytes and documents; seconds to build it (parse the stdlib with `ast`).
  bpe        `train_bpe(texts, 8192)` wall time (Hugging Face `tokenizers` trainer + conversion to
             tiktoken ranks); the corpus's token count under that tokenizer (no EOT), bytes/token.
  encode     the whole corpus encoded by our `Tokenizer` (tiktoken) and by Hugging Face `tokenizers`
             with the *same* vocabulary and merges (`to_hf_tokenizer`), ids checked equal:
             one thread (`encode` per document) and batched (`encode_batch`: tiktoken with as many
             threads as cores, `tokenizers` with its own rayon pool). MB/s of UTF-8 input and ratios.
  loader     `PackedLoader` over `load_text_dataset("pydocs", "train")`, batch 16 x (256+1), shuffle
             buffer 256: batches/s and tokens/s (B*T per batch) as the consumer sees them, prefetch
             thread included, after a warm-up. Compared with the seed model's training speed on this
             CPU, *assumed* to be 3,000 tokens/s at batch 16 x 256 (NOTES.md: a careful plain-JAX
             GPT trains at ~2,800-3,700 tokens/s here): the ratio says how many times faster the
             loader produces batches than training consumes them (the issue asks for >= 50).

Each timing is the median of --repeats runs (`*_best`: the fastest, for a CPU shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from importlib.metadata import version

from _timing import stopwatch, timed

SEED_TRAIN_TOKENS_PER_S = 3000.0  # assumption, see the module docstring
BATCH, SEQ = 16, 256


def median_best(fn, repeats: int) -> tuple[float, float, object]:
    """(median seconds, best seconds, last result) of `repeats` calls of `fn`."""
    times = timed(fn, repeats)
    return statistics.median(times), min(times), times.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--loader-batches", type=int, default=300, help="batches timed per loader run")
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args(argv)

    with stopwatch() as corpus:
        from microgpt_data import (
            PackedLoader,
            load_text_dataset,
            pydocs_documents,
            to_hf_tokenizer,
            train_bpe,
        )

        documents = pydocs_documents()
    texts = [doc.text for doc in documents]
    corpus_bytes = sum(len(t.encode("utf-8")) for t in texts)
    mb = corpus_bytes / 1e6

    bpe_s, bpe_best, tokenizer = median_best(lambda: train_bpe(texts, args.vocab_size), args.repeats)
    hf = to_hf_tokenizer(tokenizer)
    threads = os.cpu_count() or 1

    ours_1, ours_1_best, ours_ids = median_best(lambda: [tokenizer.encode(t) for t in texts], args.repeats)
    hf_1, hf_1_best, hf_encodings = median_best(lambda: [hf.encode(t) for t in texts], args.repeats)
    ours_b, ours_b_best, ours_batch = median_best(
        lambda: tokenizer.encode_batch(texts, num_threads=threads), args.repeats
    )
    hf_b, hf_b_best, hf_batch = median_best(lambda: hf.encode_batch(texts), args.repeats)
    same_ids = ours_ids == [e.ids for e in hf_encodings] == ours_batch == [e.ids for e in hf_batch]
    corpus_tokens = sum(len(ids) for ids in ours_ids)

    dataset = load_text_dataset("pydocs", "train")

    def run_loader() -> float:
        loader = PackedLoader(dataset, tokenizer, batch_size=BATCH, seq_len=SEQ, shuffle_buffer=256, seed=0)
        with loader:
            for _ in range(10):  # warm-up: thread start, first shuffle-buffer fill
                next(loader)
            with stopwatch() as watch:
                for _ in range(args.loader_batches):
                    batch = next(loader)
            assert batch.shape == (BATCH, SEQ + 1) and str(batch.dtype) == "int32"
        return watch.seconds

    loader_times = [run_loader() for _ in range(args.repeats)]
    loader_s, loader_best = statistics.median(loader_times), min(loader_times)
    batches_per_s = args.loader_batches / loader_s
    tokens_per_s = batches_per_s * BATCH * SEQ

    result = {
        "bench": "data",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "versions": {name: version(name) for name in ("tiktoken", "tokenizers", "datasets", "microgpt-data")},
        "corpus": "pydocs (train + validation)",
        "corpus_documents": len(texts),
        "corpus_bytes": corpus_bytes,
        "corpus_build_s": round(corpus.seconds, 2),
        "bpe_vocab_size": tokenizer.vocab_size,
        "bpe_train_s": round(bpe_s, 2),
        "bpe_train_best_s": round(bpe_best, 2),
        "bpe_train_under_60s": bpe_s < 60,
        "corpus_tokens": corpus_tokens,
        "corpus_bytes_per_token": round(corpus_bytes / corpus_tokens, 3),
        "encode_ids_equal_tokenizers": same_ids,
        "encode_1thread_mb_per_s_ours": round(mb / ours_1, 2),
        "encode_1thread_mb_per_s_tokenizers": round(mb / hf_1, 2),
        "encode_1thread_ratio_ours_vs_tokenizers": round(hf_1 / ours_1, 2),
        "encode_1thread_best_ratio": round(hf_1_best / ours_1_best, 2),
        "encode_batch_threads": threads,
        "encode_batch_mb_per_s_ours": round(mb / ours_b, 2),
        "encode_batch_mb_per_s_tokenizers": round(mb / hf_b, 2),
        "encode_batch_ratio_ours_vs_tokenizers": round(hf_b / ours_b, 2),
        "encode_batch_best_ratio": round(hf_b_best / ours_b_best, 2),
        "encode_tokens_per_s_ours_batch": round(corpus_tokens / ours_b),
        "loader_batch_shape": [BATCH, SEQ + 1],
        "loader_batches_timed": args.loader_batches,
        "loader_batches_per_s": round(batches_per_s, 1),
        "loader_best_batches_per_s": round(args.loader_batches / loader_best, 1),
        "loader_tokens_per_s": round(tokens_per_s),
        "seed_train_tokens_per_s_assumed": SEED_TRAIN_TOKENS_PER_S,
        "seed_train_assumption": "seed model (V 8192, D 256, L 4, T 256) trains ~3,000 tokens/s at batch 16 "
        "on this 2-core CPU (NOTES.md); not measured here",
        "loader_vs_seed_train_ratio": round(tokens_per_s / SEED_TRAIN_TOKENS_PER_S, 1),
        "loader_at_least_50x": tokens_per_s / SEED_TRAIN_TOKENS_PER_S >= 50,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
