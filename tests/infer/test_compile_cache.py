"""The persistent compilation cache: a second process reads the generation program from disk."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
from microgpt_infer import generate, load_model
from microgpt_infer.compile_cache import enable_compilation_cache
if sys.argv[1] != "-":
    generate(load_model(sys.argv[1]), "hi", rng=0, max_new_tokens=4, temperature=0)
print(enable_compilation_cache())
"""


def _run(model_dir, cache: str) -> str:
    env = {**os.environ, "MICROGPT_COMPILATION_CACHE": cache}
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)  # JAX's default: the module lowers it
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_cache_is_written_and_can_be_turned_off(model_dir, tmp_path):
    cache = tmp_path / "cache"
    assert _run(model_dir, str(cache)) == str(cache)
    # the compiled generation, for the next process, though it compiles in well under JAX's 1 s default
    assert [entry for entry in cache.iterdir() if entry.name.startswith("jit__generate-")]
    assert _run("-", "0") == "None"
