"""`GPTConfig`: the shape and the choices of a microGPT model, validated on construction; and the one
check of a typed value (`check_value`, `check_fields`) that every config and argument check uses.

The checker reads what is valid from a type annotation, so a field's annotation is its whole type
rule; ranges (>= 1, in (0, 1), finite, divides) stay explicit checks after it:

    int            an integer: an int or a numpy integer scalar (`numbers.Integral`), never True/False
    float          a number: an integer as above, a float or a numpy float scalar, never a bool
                   (NaN and ±inf are floats: finiteness is a range check)
    bool           True or False (a Python bool; numpy bools are refused)
    str            a string
    Literal[a, b]  one of the listed values, each of its own type (Literal[1] refuses True and 1.0)
    X | None       X, or None
    a class        an instance of it (RunConfig.model: a GPTConfig)

Numpy scalars are accepted as the numbers they are, and `check_value` returns them as Python numbers
(`check_fields` stores those), so a checked config stays JSON-ready.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "GPTConfig",
    "FORMAT_VERSION",
    "SEED_CONFIG",
    "check_fields",
    "check_value",
    "describe",
    "fits",
    "is_integer",
    "is_real",
]

# Version of the `config.json` layout written by `save_pretrained`; `GPTConfig.upgrade` reads older ones.
FORMAT_VERSION = 1

# The words a string field may take. The annotations are what `check_fields` reads; the tuples of
# their values are for the flags and checks elsewhere that list them.
PositionalKind = Literal["learned", "sinusoidal", "rope"]
NormKind = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["gelu", "swiglu"]
GELUKind = Literal["tanh", "exact"]
AttentionKind = Literal["math", "fused"]
ComputeDtype = Literal["float32", "bfloat16"]  # what a model computes in
CheckDtype = Literal["float64"]  # besides them, for gradient checks (under jax.enable_x64)
# The dtypes `save_pretrained` may store weights in (`checkpoint.STORED_DTYPES` maps them to files').
WeightsDtype = Literal["float32", "bfloat16"]

POSITIONAL_KINDS = typing.get_args(PositionalKind)
NORM_KINDS = typing.get_args(NormKind)
MLP_KINDS = typing.get_args(MLPKind)
GELU_KINDS = typing.get_args(GELUKind)
ATTENTION_KINDS = typing.get_args(AttentionKind)
COMPUTE_DTYPES = typing.get_args(ComputeDtype)
(CHECK_DTYPE,) = typing.get_args(CheckDtype)
WEIGHTS_DTYPES = typing.get_args(WeightsDtype)


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and what is valid."""


# ------------------------------------------------------------------------------------------------
# The one check of a typed value (the table at the top of this module).
def is_integer(value: object) -> bool:
    """Whether `value` is an integer and not a bool: an int or a numpy integer scalar."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether `value` is a real number and not a bool: an integer, a float or a numpy float scalar
    (NaN and ±inf included: check `math.isfinite` where they are out of range)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def fits(value: object, annotation: Any) -> bool:
    """Whether `value` is of the type `annotation` describes (the table at the top of this module)."""
    if annotation is int:
        return is_integer(value)
    if annotation is float:
        return is_real(value)
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin is Literal:  # a value of the choice's own type: Literal[1] refuses True and 1.0
        return any(fits(value, type(choice)) and value == choice for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, member) for member in typing.get_args(annotation))
    if origin is None and isinstance(annotation, type):
        return isinstance(value, annotation)  # bool, str, a class
    raise TypeError(f"fits cannot check values of type {annotation!r}")


def describe(annotation: Any) -> str:
    """What `fits(value, annotation)` accepts, in words: "an integer or None", "one of ['a', 'b']"."""
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if annotation in words:
        return words[annotation]
    if annotation is None or annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return repr(args[0]) if len(args) == 1 else f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(map(describe, args))
    return f"a {getattr(annotation, '__name__', annotation)}"


def check_value(name: str, value: Any, annotation: Any, *, error: type[Exception] = ConfigError) -> Any:
    """`value`, with a numpy scalar as the Python int or float it equals, if it `fits` `annotation`.

    Raises:
      error: "{name} must be {describe(annotation)}, got {value!r}".
    """
    if not fits(value, annotation):
        raise error(f"{name} must be {describe(annotation)}, got {value!r}")
    if is_integer(value) and type(value) is not int:
        return int(value)
    if is_real(value) and type(value) not in (int, float):
        return float(value)
    return value


def check_fields(instance: Any, *, error: type[Exception] = ConfigError, qualified: bool = True) -> None:
    """Checks each field of the dataclass `instance` against its annotation (`check_value`), in
    declaration order; a numpy scalar is stored back as the Python number it equals (frozen or not).

    Raises:
      error: naming the first bad field, as "Class.field" (or "field" with `qualified=False`).
    """
    prefix = f"{type(instance).__name__}." if qualified else ""
    for name, annotation in _field_types(type(instance)):
        value = getattr(instance, name)
        checked = check_value(prefix + name, value, annotation, error=error)
        if checked is not value:
            object.__setattr__(instance, name, checked)


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Hyper-parameters of a decoder-only Transformer.

    Letters used in shape comments throughout microgpt_core: V = vocab_size, T = context_length,
    D = d_model, L = n_layers, H = n_heads, Hkv = n_kv_heads, Dh = head_dim = D / H, F = d_ff.

    Attributes:
      vocab_size: number of token ids V.
      context_length: longest sequence T the model attends over.
      d_model: width D of the residual stream.
      n_layers: number of Transformer blocks L.
      n_heads: attention (query) heads H; must divide d_model.
      n_kv_heads: key/value heads Hkv (default H); must divide H. Each group of H / Hkv query heads
        shares one key/value head: Hkv = H is multi-head attention, 1 < Hkv < H grouped-query
        attention (Ainslie et al. 2023, Llama 2 70B and later), Hkv = 1 multi-query attention
        (Shazeer 2019). The KV cache holds Hkv heads.
      d_ff: hidden width F of the MLP. Default 4 · d_model for GELU; for SwiGLU, as Llama does, 2/3
        of that rounded up to a multiple of 32 (⌈8 · d_model / 96⌉ · 32), so the three matrices of
        the gated MLP hold about as many weights as GELU's two.
      positional: "learned" (a table, GPT-2), "sinusoidal" (Vaswani et al. 2017, no parameters) or
        "rope" (rotary embeddings, Su et al. 2021, Llama: queries and keys rotated by their position
        inside attention; no parameters, and head_dim must be even).
      rope_theta: the base θ of the rotary frequencies θ^(-2i/Dh) (10000 in the paper; Llama 3 uses
        500000); read only with positional="rope".
      norm: "layernorm" (Ba et al. 2016, GPT-2) or "rmsnorm" (Zhang and Sennrich 2019, Llama; a
        scale and no bias).
      bias: whether linear layers and layer norms carry biases.
      final_norm: whether a norm precedes the output head (GPT-2 has one).
      tie_embeddings: whether the output head reuses the token embedding matrix transposed.
      embed_scale: whether token embeddings are multiplied by sqrt(d_model) (Vaswani et al.).
      norm_eps: epsilon inside the norm.
      qk_norm: whether queries and keys are RMS-normalised per head (a learned scale of Dh) before
        the scores and the rotation (QK-norm; OLMo 2, Qwen3, Gemma 3). It bounds the attention
        logits, which keeps training stable at high learning rates.
      dropout: dropout rate in [0, 1) applied in training only.
      mlp: "gelu" (GPT-2: GELU(x W_in) W_out) or "swiglu" (Shazeer 2020, Llama: a SiLU-gated MLP,
        (SiLU(x W_gate) ⊙ x W_in) W_out, with a third matrix of d_ff columns).
      gelu: "tanh" (GPT-2's approximation) or "exact" (erf), for the GELU MLP.
      attention: "math" (written from the definition) or "fused" (`jax.nn.dot_product_attention`).
      compute_dtype: dtype of matmul inputs: "float32" or "bfloat16" (params stay float32;
        softmax, norm statistics, logits and loss stay float32). "float64" runs everything in
        double precision (for gradient checks; needs `jax.enable_x64`).
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    d_ff: int | None = None
    positional: PositionalKind = "learned"
    rope_theta: float = 10000.0
    norm: NormKind = "layernorm"
    qk_norm: bool = False
    bias: bool = True
    final_norm: bool = True
    tie_embeddings: bool = True
    embed_scale: bool = False
    norm_eps: float = 1e-5
    dropout: float = 0.0
    mlp: MLPKind = "gelu"
    gelu: GELUKind = "tanh"
    attention: AttentionKind = "math"
    compute_dtype: ComputeDtype | CheckDtype = "float32"

    def __post_init__(self) -> None:
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", _default_d_ff(self.d_model, self.mlp))
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        self.validate()

    # ----------------------------------------------------------------------------------------------
    # Derived values.
    @property
    def head_dim(self) -> int:
        """Dh = D / H."""
        return self.d_model // self.n_heads

    @property
    def qkv_dim(self) -> int:
        """Width of the fused query/key/value projection: (H + 2 Hkv) Dh (3D without grouping)."""
        return (self.n_heads + 2 * self.n_kv_heads) * self.head_dim

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raises `ConfigError` naming the first field whose value is not of its annotated type
        (`check_fields`) or is out of range."""
        check_fields(self)
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"GPTConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"valid n_heads divide {self.d_model}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"GPTConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads}): each "
                f"key/value head serves n_heads / n_kv_heads query heads; valid n_kv_heads are "
                f"{[h for h in range(1, self.n_heads + 1) if self.n_heads % h == 0]}"
            )
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"GPTConfig.d_model must be even with sinusoidal positions, got {self.d_model}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ConfigError(
                f"GPTConfig.positional='rope' rotates pairs of dimensions, so head_dim = d_model / n_heads "
                f"must be even, got {self.d_model} / {self.n_heads} = {self.head_dim}"
            )
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 1):
            raise ConfigError(f"GPTConfig.rope_theta must be a finite number > 1, got {self.rope_theta!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"GPTConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"GPTConfig.norm_eps must be a number in (0, 1), got {self.norm_eps!r}")

    # ----------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        if (
            {"d_model", "mlp"} & set(changes)
            and "d_ff" not in changes
            and self.d_ff == _default_d_ff(self.d_model, self.mlp)
        ):
            changes["d_ff"] = None  # a default width follows the model width and the MLP kind
        if "n_heads" in changes and "n_kv_heads" not in changes and self.n_kv_heads == self.n_heads:
            changes["n_kv_heads"] = None  # multi-head attention stays multi-head
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-compatible values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Builds a config from `to_dict()`'s output; unknown keys and missing fields are errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"a GPTConfig must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown}; valid fields are {names}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(f"GPTConfig is missing required field(s) {missing}")
        return cls(**data)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> GPTConfig:
        """Reads a `config.json` body of any format version (the `format_version` key is optional).

        Version 1 is the current layout; newer versions than this library knows are refused.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a GPTConfig must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if not is_integer(version) or version < 1:
            raise ConfigError(f"format_version must be an integer >= 1, got {version!r}")
        if version > FORMAT_VERSION:
            raise ConfigError(
                f"format_version {version} is newer than this microgpt-core understands "
                f"({FORMAT_VERSION}); upgrade microgpt-core"
            )
        return cls.from_dict(data)


def _default_d_ff(d_model: object, mlp: object) -> int | None:
    if not is_integer(d_model):
        return None  # validate() names the bad d_model
    if mlp == "swiglu":
        return -(-8 * d_model // 96) * 32  # ⌈(2/3 · 4D) / 32⌉ · 32
    return 4 * d_model


# The original microGPT's model (kandarpa02/microGPT, which reported 5.4M parameters): the "seed"
# configuration that benchmarks compare at and the `seed-5m` training preset builds on.
SEED_CONFIG = GPTConfig(
    vocab_size=8192,
    context_length=256,
    d_model=256,
    n_layers=4,
    n_heads=4,
    positional="sinusoidal",
    tie_embeddings=True,
    embed_scale=True,
    final_norm=False,
)
