"""microgpt-infer benchmark, side by side with the peer (Hugging Face `transformers` GPT-2 on PyTorch).

    uv run python bench/infer.py                 # ours and the peer in its side venv: one JSON line
    uv run python bench/infer.py --no-peer       # ours only
    nice -n -5 uv run python bench/infer.py      # on a busy machine (as root)

The seed configuration (V 8192, D 256, 4 layers, 4 heads, sinusoidal positions, tied and scaled
embeddings, no final norm) with random weights and an 8192-token BPE trained on pydocs, saved as a
model folder and read back with `load_model`; context 272 so a 16-token prompt plus 256 new tokens
fits (sinusoidal positions: the parameters do not depend on it). Measured:

  generate    `generate(model, prompts, max_new_tokens=256, temperature=0)`: text in, text out, batch 1
              and 8 prompts of 16 tokens; tokens/s = batch * 256 / seconds of one call (compiled
              before: --repeats timed calls after one warmup; `median` and `best`). The peer: KV-cached
              greedy `generate` on 16 random token ids, exactly 256 new tokens, one call right after
              each of ours (`PeerServer`), so both see the same minutes of the machine.
  cold50      a fresh process: `load_model` of the saved folder, then `generate` of 50 tokens (greedy,
              batch 1): seconds from `load_model` to the 50th token (`load_to_50_s`, target < 2 s), and
              the whole process as the parent sees it, interpreter start and imports included
              (`process_s`). Median and best of --cold-runs processes. `cold`: each process starts
              with an empty compilation cache (it compiles); `warm_cache`: the processes share a
              cache folder that one earlier process filled (`compile_cache.py`: what a user's second
              `generate` command gets). The peer: its first 50-token `generate` call after building
              the model, and since its script started.
  peak_rss    a fresh process: `load_model`, then one batch-8, 256-token generation; the process's peak
              resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), and its resident memory
              after `load_model` and before generating.

Every generation is checked to produce exactly 256 (or 50) tokens per row, so an early end-of-text
never flatters the figures. The peer runs `bench/peer_hf.py` in the side venv of DEVELOPERS.md in
the same invocation, so ratios compare like with like on this (shared, noisy) machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from _peer import PeerServer, interleave, run_peer
from _timing import stopwatch, summary, timed

from microgpt_core import SEED_CONFIG, init_params, save_pretrained
from microgpt_infer import generate, load_model
from microgpt_infer.engine import generate_tokens

SEED = SEED_CONFIG
PROMPT, NEW, FIRST = 16, 256, 50

COLD = f"""
import sys, time
start = time.perf_counter()
from microgpt_infer import generate, load_model
mode, folder, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "cold":
    t0 = time.perf_counter()
    model = load_model(folder)
    generate(model, prompt, rng=0, max_new_tokens={FIRST}, temperature=0)
    end = time.perf_counter()
    print(end - t0, end - start)
else:
    import resource
    model = load_model(folder)
    rss_loaded = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
    generate(model, [prompt] * 8, rng=0, max_new_tokens={NEW}, temperature=0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_loaded)
"""


def make_model_dir(folder: Path) -> tuple[Path, str]:
    """Saves the seed model (context 272) with an 8192-token BPE; returns it and a 16-token prompt."""
    from microgpt_data import pydocs_texts, train_bpe

    texts = pydocs_texts("train")
    tokenizer = train_bpe(texts, SEED.vocab_size)
    config = SEED.replace(context_length=PROMPT + NEW)
    save_pretrained(folder, init_params(jax.random.key(0), config), config)
    tokenizer.save(folder)
    ids = tokenizer.encode(texts[0])
    for start in range(0, len(ids) - PROMPT):  # a 16-token span whose text re-encodes to 16 tokens
        prompt = tokenizer.decode(ids[start : start + PROMPT])
        if len(tokenizer.encode(prompt)) == PROMPT:
            return folder, prompt
    raise RuntimeError("no 16-token prompt found")


def check_full_length(model, prompts: list[str], new: int) -> None:
    """Raises unless greedy decoding of `prompts` runs `new` tokens in every row (no early EOT)."""
    ids = np.array([model.tokenizer.encode(p) for p in prompts], np.int32)
    out = generate_tokens(
        model.params, model.config, ids, np.full(len(prompts), ids.shape[1], np.int32),
        rng=jax.random.key(0), max_new_tokens=new, temperature=0, eot_id=model.tokenizer.eot_id,
    )  # fmt: skip
    if int(np.min(out.num_tokens)) != new:
        raise RuntimeError(f"a row ended early ({np.asarray(out.num_tokens)} tokens): the figure would lie")


def bench_generate(model, prompt: str, batch: int, repeats: int, peer: PeerServer | None) -> dict:
    prompts = [prompt] * batch if batch > 1 else prompt

    def seconds() -> float:
        return timed(lambda: generate(model, prompts, rng=0, max_new_tokens=NEW, temperature=0))[0]

    times, peer_times = interleave(seconds, peer, batch, repeats)
    check_full_length(model, [prompt] * batch, NEW)
    result = {
        **summary([batch * NEW / t for t in times], 1, best=max),
        "times_s": [round(t, 3) for t in times],
    }
    if peer is not None:
        result["peer"] = summary([batch * NEW / t for t in peer_times], 1, best=max)
    return result


def fresh_process(mode: str, folder: Path, prompt: str, cache: Path) -> tuple[list[float], float]:
    env = {**os.environ, "MICROGPT_COMPILATION_CACHE": str(cache)}
    with stopwatch() as watch:
        out = subprocess.run(
            [sys.executable, "-c", COLD, mode, str(folder), prompt], capture_output=True, text=True,
            check=True, env=env,
        )  # fmt: skip
    return [float(x) for x in out.stdout.split()], watch.seconds


def bench_cold(folder: Path, prompt: str, runs: int, tmp: Path) -> dict:
    cold = [fresh_process("cold", folder, prompt, tmp / f"empty-cache-{i}") for i in range(runs)]
    fresh_process("cold", folder, prompt, tmp / "shared-cache")  # fills the shared cache
    warm = [fresh_process("cold", folder, prompt, tmp / "shared-cache") for _ in range(runs)]
    return {
        kind: {"load_to_50_s": summary([r[0][0] for r in runs_]), "process_s": summary([r[1] for r in runs_])}
        for kind, runs_ in (("cold", cold), ("warm_cache", warm))
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median and best)")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes for cold50")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face / PyTorch peer")
    args = parser.parse_args(argv)

    result: dict = {
        "bench": "infer",
        "config": SEED.replace(context_length=PROMPT + NEW).to_dict(),
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "prompt_tokens": PROMPT,
        "new_tokens": NEW,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder, prompt = make_model_dir(Path(tmp) / "seed")
        model = load_model(folder)
        server = None if args.no_peer else PeerServer.start()
        try:
            for b in (1, 8):
                result[f"generate_b{b}_tokens_per_s"] = bench_generate(model, prompt, b, args.repeats, server)
        finally:
            if server is not None:
                server.close()
        check_full_length(model, [prompt], FIRST)

        result["cold50"] = bench_cold(folder, prompt, args.cold_runs, Path(tmp))
        (peak, loaded), _ = fresh_process("rss", folder, prompt, Path(tmp) / "rss-cache")
        result["peak_rss_b8_mb"] = round(peak, 1)
        result["rss_after_load_mb"] = round(loaded, 1)

    peer = None if args.no_peer else run_peer("--what", "first50", "--repeats", str(args.repeats))
    if peer is not None:
        result["peer"] = {k: v for k, v in peer.items() if k != "times_s"}
        ours = result
        for b in (1, 8):  # measured interleaved with ours, above
            figures = ours[f"generate_b{b}_tokens_per_s"].pop("peer")
            result["peer"][f"decode_b{b}_tokens_per_s"] = figures["median"]
            result["peer"][f"decode_b{b}_best_tokens_per_s"] = figures["best"]
        result["ratio_vs_peer"] = {
            f"generate_b{b}_{kind}": round(
                ours[f"generate_b{b}_tokens_per_s"][kind]
                / result["peer"][f"decode_b{b}{suffix}_tokens_per_s"],
                2,
            )
            for b in (1, 8)
            for kind, suffix in (("median", ""), ("best", "_best"))
        }
        result["ratio_vs_peer"]["first50_speedup"] = round(
            peer["first50_first_generate_call_s"] / ours["cold50"]["cold"]["load_to_50_s"]["median"], 2
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
