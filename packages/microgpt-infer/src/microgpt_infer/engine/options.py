"""XLA options for the decode loop, chosen by the backend and the CPU's features.

The one place the engine reads the machine: `/proc/cpuinfo`, once, for AVX-512.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from microgpt_core.config import GPTConfig

__all__ = ["compiler_options"]


def compiler_options(config: GPTConfig) -> dict[str, Any]:
    """XLA options for a generation loop of this model on the current backend (`jax.jit(...,
    compiler_options=...)`). Other backends than CPU get none. On CPU:

      * float32 turns off XLA's YNNPACK dot fusions, whose matrix-vector products ran slower than
        XLA's own (bfloat16 needs them);
      * region-based copy insertion, without which XLA copies every layer's cache on every decode
        step instead of updating it in place;
      * no tree reductions: XLA's CPU backend splits each long reduction (norm statistics, softmax
        maxima and sums, the argmax over the vocabulary) into a windowed reduction and a short one,
        which bounds the rounding of very long float sums. A decode step's reductions are short
        (the model width, a window of the cache, one row of logits), and the split ones cost it
        about 5% (78 reduce-windows in the seed model's loop);
      * on a CPU with AVX-512, 512-bit vectors in XLA's generated code (default 256).

    bench/README.md has the measurements behind each.
    """
    if jax.default_backend() != "cpu":
        return {}
    options: dict[str, Any] = {
        "xla_cpu_copy_insertion_use_region_analysis": True,
        "xla_disable_hlo_passes": "tree_reduction_rewriter",
    }
    if config.compute_dtype == "float32":
        options["xla_cpu_experimental_ynn_fusion_type"] = ""
    if _cpu_has_avx512():
        options["xla_cpu_prefer_vector_width"] = 512
    return options


@functools.cache
def _cpu_has_avx512() -> bool:
    """Whether this machine's CPU has AVX-512 (read from /proc/cpuinfo; False where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False
