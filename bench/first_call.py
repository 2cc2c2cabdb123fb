"""The original microGPT's example on first use: how long `generate_text` takes in a fresh process.

    uv run python bench/first_call.py              # 3 fresh processes: one JSON line
    uv run python bench/first_call.py --runs 5

Each process runs the example as a new user would, in an empty folder with no $MICROGPT_MODEL and
an empty compilation cache (so it compiles everything):

    rng = jax.random.PRNGKey(443)
    text = generate_text(rng=rng, text="Once upon a time")

Measured: `first_call_s`, the seconds of that first call (loading the model microgpt-infer ships,
compiling, 50 tokens; target < 5 s on 2 CPU cores); `second_call_s`, the same call once more in the
same process (compiled); `process_s`, the whole process as the parent sees it, interpreter start
and imports included. Then the same process again with the compilation cache the first one filled:
`warm_cache_first_call_s`, `warm_cache_process_s`. And the `generate` command (50 tokens of the
same prompt, streamed), whole processes with an empty and with a used cache: `generate_command_s`,
`generate_command_warm_cache_s`. Median and best of --runs rounds, with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import stopwatch, summary

from microgpt_train.metrics import cpu_model

EXAMPLE = """
import time
import jax
from microgpt_infer import generate_text

rng = jax.random.PRNGKey(443)
t0 = time.perf_counter()
text = generate_text(rng=rng, text="Once upon a time")
t1 = time.perf_counter()
again = generate_text(rng=rng, text="Once upon a time")
t2 = time.perf_counter()
assert text == again and text.startswith("Once upon a time"), text
print(t1 - t0, t2 - t1)
print(text)
"""


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGPT_")}
    env["MICROGPT_COMPILATION_CACHE"] = str(cache)
    return env


def fresh_process(folder: Path, cache: Path) -> tuple[float, float, float, str]:
    with stopwatch() as watch:
        out = subprocess.run(
            [sys.executable, "-c", EXAMPLE], capture_output=True, text=True, check=True, env=_env(cache),
            cwd=folder,
        )  # fmt: skip
    first, second = (float(x) for x in out.stdout.split("\n", 1)[0].split())
    return first, second, watch.seconds, out.stdout.split("\n", 1)[1].rstrip("\n")


def generate_command(folder: Path, cache: Path) -> float:
    command = [str(Path(sys.executable).parent / "generate"), "Once upon a time", "--seed", "443"]
    with stopwatch() as watch:
        subprocess.run(command, capture_output=True, check=True, env=_env(cache), cwd=folder)
    return watch.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes (median and best)")
    args = parser.parse_args(argv)
    runs, warm, command, command_warm = [], [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            runs.append(fresh_process(folder, folder / "cache"))
            warm.append(fresh_process(folder, folder / "cache"))
            command.append(generate_command(folder, folder / "command-cache"))
            command_warm.append(generate_command(folder, folder / "command-cache"))
            print(
                f"run {i + 1}: first call {runs[-1][0]:.2f} s, with the cache {warm[-1][0]:.2f} s; "
                f"generate {command[-1]:.2f} s, again {command_warm[-1]:.2f} s",
                file=sys.stderr,
            )
    result = {
        "bench": "first_call",
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "first_call_s": summary([r[0] for r in runs], 2),
        "second_call_s": summary([r[1] for r in runs], 3),
        "process_s": summary([r[2] for r in runs], 2),
        "warm_cache_first_call_s": summary([r[0] for r in warm], 2),
        "warm_cache_process_s": summary([r[2] for r in warm], 2),
        "generate_command_s": summary(command, 2),
        "generate_command_warm_cache_s": summary(command_warm, 2),
        "text": runs[0][3],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
