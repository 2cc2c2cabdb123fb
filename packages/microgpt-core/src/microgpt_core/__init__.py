"""microgpt_core: a GPT-style decoder-only Transformer written from its equations in JAX.

Names load on first use (PEP 562): `import microgpt_core` (or a light module of it, such as
`microgpt_core.files`) does not import JAX until a name that needs it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "layers": None,  # the module itself
    "streaming": None,  # the module itself
    "DecodeWeights": "cache",
    "KVCache": "cache",
    "decode_weights": "cache",
    "forward_cached": "cache",
    "init_cache": "cache",
    "split_cache": "cache",
    "stack_cache": "cache",
    "CheckpointError": "checkpoint",
    "load_pretrained": "checkpoint",
    "save_pretrained": "checkpoint",
    "FORMAT_VERSION": "config",
    "SEED_CONFIG": "config",
    "ConfigError": "config",
    "GPTConfig": "config",
    "compiler_options": "model",
    "cross_entropy": "model",
    "forward": "model",
    "hidden_states": "model",
    "count_params": "params",
    "init_params": "params",
    "param_axes": "params",
    "param_shapes": "params",
    "Generation": "sampling",
    "SamplingError": "sampling",
    "generate_tokens": "sampling",
    "greedy": "sampling",
    "sample_logits": "sampling",
}

__all__ = [
    "FORMAT_VERSION",
    "SEED_CONFIG",
    "CheckpointError",
    "ConfigError",
    "DecodeWeights",
    "GPTConfig",
    "Generation",
    "KVCache",
    "SamplingError",
    "compiler_options",
    "count_params",
    "cross_entropy",
    "decode_weights",
    "forward",
    "forward_cached",
    "generate_tokens",
    "greedy",
    "hidden_states",
    "init_cache",
    "init_params",
    "layers",
    "load_pretrained",
    "param_axes",
    "param_shapes",
    "sample_logits",
    "save_pretrained",
    "split_cache",
    "stack_cache",
    "streaming",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from microgpt_core import layers, streaming
    from microgpt_core.cache import (
        DecodeWeights,
        KVCache,
        decode_weights,
        forward_cached,
        init_cache,
        split_cache,
        stack_cache,
    )
    from microgpt_core.checkpoint import CheckpointError, load_pretrained, save_pretrained
    from microgpt_core.config import FORMAT_VERSION, SEED_CONFIG, ConfigError, GPTConfig
    from microgpt_core.model import compiler_options, cross_entropy, forward, hidden_states
    from microgpt_core.params import count_params, init_params, param_axes, param_shapes
    from microgpt_core.sampling import Generation, SamplingError, generate_tokens, greedy, sample_logits


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        value = (
            importlib.import_module(f"microgpt_core.{name}")
            if module is None
            else getattr(importlib.import_module(f"microgpt_core.{module}"), name)
        )
        globals()[name] = value
        return value
    raise AttributeError(f"module 'microgpt_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
