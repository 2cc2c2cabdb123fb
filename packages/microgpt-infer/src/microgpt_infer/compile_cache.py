"""JAX's persistent compilation cache, so a new process does not compile the same generation again.

A generation is one XLA program per (batch, prompt width, max_new_tokens, sampling settings); in a
fresh process compiling it is most of the time to the first tokens (seconds on a small CPU). With
the cache on, the second process that runs the same program reads it from disk instead.

On by default for `load_model` and `generate`, in `$XDG_CACHE_HOME/microgpt/jax` (else
`~/.cache/microgpt/jax`). `MICROGPT_COMPILATION_CACHE=DIR` picks another folder, `=0` turns it off.
A cache folder the user set for JAX (`jax_compilation_cache_dir`) is left as it is.

JAX caches only programs that took at least `jax_persistent_cache_min_compile_time_secs` to compile
(1 s by default). A whole generation of the seed model can compile in less than that on a fast CPU
(measured; bench/README.md), so when this module turns the cache on it also lowers that threshold
to 0.1 s, unless the user chose one (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`, or a value other
than JAX's default).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "enable_compilation_cache"]

CACHE_ENV = "MICROGPT_COMPILATION_CACHE"
MIN_COMPILE_SECONDS = 0.1  # programs that compile faster are not worth a file
_JAX_DEFAULT_MIN_COMPILE_SECONDS = 1.0
_state: dict[str, str | None] = {}


def enable_compilation_cache() -> str | None:
    """Turns the cache on once per process (see the module docstring); returns its folder or None."""
    if "dir" in _state:
        return _state["dir"]
    _state["dir"] = None
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in {"0", "off", "false", "no"}:
        return None
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        _state["dir"] = current
        return current
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = Path(setting).expanduser() if setting else base / "microgpt" / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    threshold = jax.config.jax_persistent_cache_min_compile_time_secs
    chosen = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in os.environ
    if not chosen and threshold == _JAX_DEFAULT_MIN_COMPILE_SECONDS:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _state["dir"] = str(folder)
    return _state["dir"]
