"""microgpt_core: a GPT-style decoder-only Transformer written from its equations in JAX.

    config.py     GPTConfig, SEED_CONFIG           params.py    init_params, param_shapes, param_axes
    layers.py     the layers, one equation each    model.py     forward, forward_cached, cross_entropy,
                                                                trace, logit_lens
    cache.py      KVCache, init_cache              sampling.py  sample_logits, generate_tokens
    precision.py  the mixed-precision matmul       checkpoint.py save_pretrained, load_pretrained

Names load on first use (PEP 562): `import microgpt_core` (or a light module of it, such as
`microgpt_core.files`) does not import JAX until a name that needs it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt_core.lazy import lazy_names

__all__ = [
    "ACTIVATIONS",
    "FORMAT_VERSION",
    "SEED_CONFIG",
    "CheckpointError",
    "ConfigError",
    "GPTConfig",
    "Generation",
    "KVCache",
    "SamplingError",
    "count_params",
    "cross_entropy",
    "forward",
    "forward_cached",
    "generate_tokens",
    "init_cache",
    "init_params",
    "layers",
    "load_pretrained",
    "logit_lens",
    "param_axes",
    "param_shapes",
    "sample_logits",
    "save_pretrained",
    "trace",
]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "layers": None,  # the module itself
        "KVCache": "microgpt_core.cache",
        "forward_cached": "microgpt_core.model",
        "init_cache": "microgpt_core.cache",
        "CheckpointError": "microgpt_core.checkpoint",
        "load_pretrained": "microgpt_core.checkpoint",
        "save_pretrained": "microgpt_core.checkpoint",
        "FORMAT_VERSION": "microgpt_core.config",
        "SEED_CONFIG": "microgpt_core.config",
        "ConfigError": "microgpt_core.config",
        "GPTConfig": "microgpt_core.config",
        "cross_entropy": "microgpt_core.model",
        "forward": "microgpt_core.model",
        "ACTIVATIONS": "microgpt_core.model",
        "logit_lens": "microgpt_core.model",
        "trace": "microgpt_core.model",
        "count_params": "microgpt_core.params",
        "init_params": "microgpt_core.params",
        "param_axes": "microgpt_core.params",
        "param_shapes": "microgpt_core.params",
        "Generation": "microgpt_core.sampling",
        "SamplingError": "microgpt_core.sampling",
        "generate_tokens": "microgpt_core.sampling",
        "sample_logits": "microgpt_core.sampling",
    },
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from microgpt_core import layers
    from microgpt_core.cache import KVCache, init_cache
    from microgpt_core.checkpoint import CheckpointError, load_pretrained, save_pretrained
    from microgpt_core.config import FORMAT_VERSION, SEED_CONFIG, ConfigError, GPTConfig
    from microgpt_core.model import ACTIVATIONS, cross_entropy, forward, forward_cached, logit_lens, trace
    from microgpt_core.params import count_params, init_params, param_axes, param_shapes
    from microgpt_core.sampling import Generation, SamplingError, generate_tokens, sample_logits
