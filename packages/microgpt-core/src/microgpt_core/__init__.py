"""microgpt_core: a GPT-style decoder-only Transformer written from its equations in JAX."""

from microgpt_core.checkpoint import CheckpointError, load_pretrained, save_pretrained
from microgpt_core.config import FORMAT_VERSION, ConfigError, GPTConfig
from microgpt_core.params import count_params, init_params, param_axes, param_shapes

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "ConfigError",
    "GPTConfig",
    "count_params",
    "init_params",
    "load_pretrained",
    "param_axes",
    "param_shapes",
    "save_pretrained",
]
