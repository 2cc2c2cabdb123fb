"""microgpt_core: a GPT-style decoder-only Transformer written from its equations in JAX."""

from microgpt_core import layers
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
]
