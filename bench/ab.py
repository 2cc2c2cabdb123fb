"""Decode speed and cold start of this checkout against another commit, interleaved on one machine.

    uv run python bench/ab.py --base d30d54a                 # one JSON line
    uv run python bench/ab.py --base main~3 --rounds 15 --batches 1,8

The base commit is checked out into a temporary git worktree; each side runs in its own worker
process whose imports come from that side's `packages/*/src` (PYTHONPATH comes before the
workspace's editable installs). Both sides run the seed configuration with the same random weights:
KV-cached greedy decoding of 256 new tokens after a 16-token prompt (as in bench/core.py), and the
cold start of a fresh process (`load_pretrained`, then a 50-token generation, compilation included).
Each side generates with its fast `generate_tokens`, the one users' `generate` runs:
`microgpt_infer.engine.generate_tokens`, or on a commit from before the engine moved to
microgpt_infer, `microgpt_core.generate_tokens` (which was then the fast one).

Round by round the two sides alternate (which goes first alternates too), so they share the minutes
of a shared machine; `new_vs_base` is the median over rounds of (new time / base time) in the same
round with its quartiles: below 1 means this checkout is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _args import batch_sizes

from microgpt_train.metrics import cpu_model

ROOT = Path(__file__).resolve().parent.parent
PROMPT, NEW, COLD_NEW = 16, 256, 50

# The fast generation of either side: the engine's, or core's on a commit from before the engine.
IMPORT_GENERATE = """
try:
    from microgpt_infer.engine import generate_tokens
except ImportError:
    from microgpt_core import generate_tokens
"""

WORKER = f"""
import sys, time
import jax, jax.numpy as jnp
from microgpt_core import SEED_CONFIG, init_params
{IMPORT_GENERATE}
config = SEED_CONFIG.replace(context_length={PROMPT} + {NEW})
params = init_params(jax.random.key(0), SEED_CONFIG)
print(sys.modules[generate_tokens.__module__].__file__, flush=True)
for line in sys.stdin:
    batch = int(line)
    prompt = jax.random.randint(jax.random.key(1), (batch, {PROMPT}), 0, config.vocab_size)
    run = lambda: generate_tokens(params, config, prompt, jnp.full((batch,), {PROMPT}), rng=jax.random.key(0),
                                  max_new_tokens={NEW}, temperature=0).tokens.block_until_ready()
    start = time.perf_counter()
    tokens = run()
    print(time.perf_counter() - start, int(tokens.sum()), flush=True)
"""

COLD = f"""
import sys, time
import jax, jax.numpy as jnp
from microgpt_core import load_pretrained
{IMPORT_GENERATE}
params, config = load_pretrained(sys.argv[1])
start = time.perf_counter()
generate_tokens(params, config, jnp.zeros((1, {PROMPT}), jnp.int32), jnp.array([{PROMPT}]),
                rng=jax.random.key(0), max_new_tokens={COLD_NEW}, temperature=0).tokens.block_until_ready()
print(time.perf_counter() - start)
"""

SAVE = """
import sys, jax
from microgpt_core import SEED_CONFIG, init_params, save_pretrained
save_pretrained(sys.argv[1], init_params(jax.random.key(0), SEED_CONFIG), SEED_CONFIG)
"""


def side_env(tree: Path) -> dict[str, str]:
    sources = sorted(str(p) for p in (tree / "packages").glob("*/src"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sources)}


class Worker:
    """One side's long-lived process: `decode_seconds(batch)` times one generation there."""

    def __init__(self, tree: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER], env=side_env(tree), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.module = self.process.stdout.readline().strip()
        if not self.module.startswith(str(tree)):
            raise SystemExit(f"the worker for {tree} imported generate_tokens from {self.module}")

    def decode(self, batch: int) -> tuple[float, int]:
        self.process.stdin.write(f"{batch}\n")
        self.process.stdin.flush()
        seconds, checksum = self.process.stdout.readline().split()
        return float(seconds), int(checksum)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def cold_seconds(tree: Path, model: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", COLD, model], env=side_env(tree), capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def compare(new: list[float], base: list[float]) -> dict:
    ratios = [n / b for n, b in zip(new, base, strict=True)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "new_s": round(statistics.median(new), 4),
        "base_s": round(statistics.median(base), 4),
        "new_vs_base": [round(q, 3) for q in (quartiles[0], statistics.median(ratios), quartiles[2])],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timed calls per side and figure")
    parser.add_argument(
        "--batches", type=batch_sizes, default="1,8", help="comma-separated decode batch sizes"
    )
    parser.add_argument("--cold-rounds", type=int, default=5, help="fresh processes per side (0: skip)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.cold_rounds < 0:
        parser.error("--rounds must be >= 1 and --cold-rounds >= 0")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.base}^{{commit}}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if commit.returncode != 0:
        parser.error(f"--base {args.base!r} is not a commit of {ROOT}")

    result: dict = {"bench": "ab", "cpu": cpu_model(), "cpus": os.cpu_count(), "base": commit.stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), result["base"]],
            check=True,
        )
        try:
            trees = {"new": ROOT, "base": base_tree}
            workers = {side: Worker(tree) for side, tree in trees.items()}
            try:
                for batch in args.batches:
                    checksums = {side: w.decode(batch)[1] for side, w in workers.items()}  # compiles
                    if len(set(checksums.values())) != 1:
                        raise SystemExit(f"batch {batch}: the two sides generated different tokens")
                    times: dict[str, list[float]] = {"new": [], "base": []}
                    for i in range(args.rounds):
                        for side in ("new", "base") if i % 2 == 0 else ("base", "new"):
                            times[side].append(workers[side].decode(batch)[0])
                    figures = compare(times["new"], times["base"])
                    figures["new_tokens_per_s"] = round(batch * NEW / figures["new_s"], 1)
                    result[f"decode_b{batch}"] = figures
            finally:
                for w in workers.values():
                    w.close()
            if args.cold_rounds:
                model = str(Path(tmp) / "model")
                subprocess.run([sys.executable, "-c", SAVE, model], env=side_env(base_tree), check=True)
                cold: dict[str, list[float]] = {"new": [], "base": []}
                for i in range(args.cold_rounds):
                    for side in ("new", "base") if i % 2 == 0 else ("base", "new"):
                        cold[side].append(cold_seconds(trees[side], model))
                result["cold50_first_call"] = compare(cold["new"], cold["base"])
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
