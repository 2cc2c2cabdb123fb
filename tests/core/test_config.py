"""GPTConfig: validation names the field and its valid range; dict round trips are strict."""

import dataclasses
import json
from typing import Literal

import numpy as np
import pytest

from microgpt_core import FORMAT_VERSION, ConfigError, GPTConfig
from microgpt_core.config import check_fields, check_value, describe, fits, is_integer, is_real

BASE = dict(vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"vocab_size": 0}, r"vocab_size must be >= 1, got 0"),
        ({"context_length": 0}, r"context_length must be >= 1, got 0"),
        ({"context_length": -5}, r"context_length must be >= 1, got -5"),
        ({"d_model": -32}, r"d_model must be >= 1"),
        ({"n_layers": 0}, r"n_layers must be >= 1"),
        ({"n_heads": 0}, r"n_heads must be >= 1"),
        ({"d_ff": 0}, r"d_ff must be >= 1"),
        ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be divisible by n_heads \(4\)"),
        ({"n_layers": 2.5}, r"n_layers must be an integer, got 2.5"),
        ({"vocab_size": True}, r"vocab_size must be an integer"),
        ({"positional": "rotary"}, r"positional must be one of \['learned', 'sinusoidal', 'rope'\]"),
        ({"n_kv_heads": 3}, r"n_kv_heads \(3\) must divide n_heads \(4\).*valid n_kv_heads are \[1, 2, 4\]"),
        ({"n_kv_heads": 0}, r"n_kv_heads must be >= 1, got 0"),
        ({"n_kv_heads": 2.0}, r"n_kv_heads must be an integer or None, got 2.0"),
        ({"positional": "rope", "d_model": 36, "n_heads": 4}, r"'rope' rotates pairs.*must be even.*9"),
        ({"rope_theta": 1.0}, r"rope_theta must be a finite number > 1, got 1.0"),
        ({"rope_theta": float("inf")}, r"rope_theta must be a finite number > 1"),
        ({"rope_theta": "1e4"}, r"rope_theta must be a number, got '1e4'"),
        ({"qk_norm": 1}, r"qk_norm must be true or false, got 1"),
        ({"norm": "batchnorm"}, r"norm must be one of \['layernorm', 'rmsnorm'\], got 'batchnorm'"),
        ({"mlp": "geglu"}, r"mlp must be one of \['gelu', 'swiglu'\], got 'geglu'"),
        ({"gelu": "relu"}, r"gelu must be one of \['tanh', 'exact'\], got 'relu'"),
        ({"attention": "flash"}, r"attention must be one of \['math', 'fused'\]"),
        (
            {"compute_dtype": "float16"},
            r"compute_dtype must be one of \['float32', 'bfloat16'\] or 'float64'",
        ),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\), got -0.1"),
        ({"dropout": "0.1"}, r"dropout must be a number, got '0.1'"),
        ({"norm_eps": 0.0}, r"norm_eps must be a number in \(0, 1\)"),
        ({"bias": "yes"}, r"bias must be true or false"),
        ({"positional": "sinusoidal", "d_model": 33, "n_heads": 3}, r"d_model must be even with sinusoidal"),
    ],
)
def test_bad_values_name_the_field_and_the_valid_range(changes, expected):
    with pytest.raises(ConfigError, match=expected):
        GPTConfig(**{**BASE, **changes})


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_defaults_and_derived_values():
    config = GPTConfig(**BASE)
    assert config.d_ff == 4 * 32
    assert config.head_dim == 8
    assert config.replace(d_model=64).d_ff == 256  # the default ratio follows the width
    assert config.replace(d_model=64, d_ff=100).d_ff == 100
    swiglu = config.replace(mlp="swiglu")  # Llama's width: 2/3 of 4D, rounded up to a multiple of 32
    assert (
        swiglu.d_ff == 96
        and swiglu.replace(d_model=128).d_ff == 352
        and swiglu.replace(mlp="gelu").d_ff == 128
    )
    assert GPTConfig(**BASE, mlp="swiglu", d_ff=40).replace(d_model=64).d_ff == 40  # a chosen width stays
    assert config.n_kv_heads == 4 and config.qkv_dim == 3 * 32  # multi-head by default
    assert config.replace(n_heads=8).n_kv_heads == 8  # and it stays multi-head with more heads
    grouped = config.replace(n_kv_heads=2)
    assert grouped.qkv_dim == (4 + 2 * 2) * 8 and grouped.replace(n_heads=8).n_kv_heads == 2
    with pytest.raises(ConfigError, match="n_heads"):
        config.replace(n_heads=5)


def test_dict_round_trip_through_json():
    config = GPTConfig(**BASE, positional="sinusoidal", bias=False, dropout=0.1, gelu="exact", d_ff=48)
    assert GPTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ConfigError, match=r"unknown GPTConfig field\(s\) \['n_embd'\]"):
        GPTConfig.from_dict({**BASE, "n_embd": 32})
    with pytest.raises(ConfigError, match=r"missing required field\(s\) \['vocab_size'\]"):
        GPTConfig.from_dict({k: v for k, v in BASE.items() if k != "vocab_size"})
    with pytest.raises(ConfigError, match="JSON object"):
        GPTConfig.from_dict([1, 2])


def test_upgrade_reads_current_and_refuses_newer_format_versions():
    config = GPTConfig(**BASE)
    assert GPTConfig.upgrade({**config.to_dict(), "format_version": FORMAT_VERSION}) == config
    assert GPTConfig.upgrade(config.to_dict()) == config
    with pytest.raises(ConfigError, match="newer than this microgpt-core"):
        GPTConfig.upgrade({**config.to_dict(), "format_version": FORMAT_VERSION + 1})
    with pytest.raises(ConfigError, match="format_version must be an integer"):
        GPTConfig.upgrade({**config.to_dict(), "format_version": "1"})
    with pytest.raises(ConfigError, match="format_version must be an integer"):
        GPTConfig.upgrade({**config.to_dict(), "format_version": True})


# config.json as microgpt-core wrote it before issue 14 (no norm, mlp, n_kv_heads, rope_theta, qk_norm).
BEFORE_ISSUE_14 = {
    "vocab_size": 2048, "context_length": 128, "d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 512,
    "positional": "learned", "bias": True, "final_norm": True, "tie_embeddings": True, "embed_scale": False,
    "norm_eps": 1e-05, "dropout": 0.0, "gelu": "tanh", "attention": "math", "compute_dtype": "bfloat16",
    "format_version": 1,
}  # fmt: skip


def test_a_config_json_written_before_a_field_existed_loads_with_its_default():
    written_before_norm = {k: v for k, v in GPTConfig(**BASE).to_dict().items() if k != "norm"}
    assert GPTConfig.upgrade({**written_before_norm, "format_version": 1}).norm == "layernorm"
    old = GPTConfig.upgrade(BEFORE_ISSUE_14)  # the one function every reader goes through
    assert (old.norm, old.mlp, old.positional, old.qk_norm) == ("layernorm", "gelu", "learned", False)
    assert old.n_kv_heads == old.n_heads == 4 and old.qkv_dim == 3 * 128  # its w_qkv is (L, D, 3D)
    assert GPTConfig.upgrade({**old.to_dict(), "format_version": 1}) == old


def test_config_is_frozen_and_hashable():
    config = GPTConfig(**BASE)
    with pytest.raises(AttributeError):
        config.d_model = 64  # type: ignore[misc]
    assert hash(config) == hash(GPTConfig(**BASE))


# ------------------------------------------------------------------------------------------------
# The checker: one check of a value against its annotation.
@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (3, int, True),
        (np.int64(3), int, True),  # numpy integer scalars are integers
        (np.uint8(3), int, True),
        (True, int, False),  # a bool is an int in Python, not here
        (np.True_, int, False),
        (3.0, int, False),
        ("3", int, False),
        (0.5, float, True),
        (2, float, True),  # an integer is a number
        (np.float32(0.5), float, True),
        (np.int32(2), float, True),
        (float("inf"), float, True),  # finiteness is a range check
        (False, float, False),
        (np.False_, float, False),
        ("0.5", float, False),
        (True, bool, True),
        (1, bool, False),
        (np.True_, bool, False),
        ("x", str, True),
        (b"x", str, False),
        (None, int | None, True),
        (4, int | None, True),
        (4.0, int | None, False),
        ("rope", Literal["learned", "rope"], True),
        ("rotary", Literal["learned", "rope"], False),
        (np.str_("rope"), Literal["learned", "rope"], True),
        (1, Literal[1, 2], True),
        (True, Literal[1, 2], False),  # True == 1, but it is not the literal 1
        (1.0, Literal[1, 2], False),
        (np.int64(2), Literal[1, 2], True),
        (1, Literal[True], False),
        ("float64", Literal["float32"] | Literal["float64"], True),
        (None, Literal["a"] | None, True),
    ],
)
def test_fits(value, annotation, expected):
    assert fits(value, annotation) is expected


def test_is_integer_and_is_real_refuse_bools():
    assert is_integer(7) and is_integer(np.int16(7)) and not is_integer(True) and not is_integer(np.True_)
    assert is_real(7) and is_real(0.5) and is_real(np.float16(0.5)) and not is_real(False)
    assert not is_integer(0.5) and not is_real("1") and not is_real(None)


def test_check_value_names_the_field_the_value_and_what_is_valid():
    with pytest.raises(ConfigError, match=r"^top_k must be an integer or None, got 2.5$"):
        check_value("top_k", 2.5, int | None)
    with pytest.raises(ConfigError, match=r"^norm must be one of \['a', 'b'\], got 'c'$"):
        check_value("norm", "c", Literal["a", "b"])
    with pytest.raises(ConfigError, match=r"^steps must be an integer, got True$"):
        check_value("steps", True, int)
    with pytest.raises(ConfigError, match=r"^eps must be a number, got '1e-5'$"):
        check_value("eps", "1e-5", float)
    with pytest.raises(ConfigError, match=r"^bias must be true or false, got np.True_$"):
        check_value("bias", np.True_, bool)

    class SamplingError(ValueError):
        pass

    with pytest.raises(SamplingError, match="temperature must be a number, got None"):
        check_value("temperature", None, float, error=SamplingError)
    with pytest.raises(TypeError, match="cannot check"):
        check_value("x", [1], list[int])


def test_check_value_returns_numpy_scalars_as_python_numbers():
    assert type(check_value("n", np.int64(4), int)) is int and check_value("n", np.int64(4), int) == 4
    assert type(check_value("x", np.float32(0.5), float)) is float
    assert type(check_value("x", np.int8(2), float)) is int  # an integer stays an integer
    value = 2.5
    assert check_value("x", value, float) is value


def test_describe():
    assert describe(int | None) == "an integer or None"
    assert describe(Literal["float32", "bfloat16"] | Literal["float64"]) == (
        "one of ['float32', 'bfloat16'] or 'float64'"
    )
    assert describe(GPTConfig) == "a GPTConfig"


@dataclasses.dataclass(frozen=True)
class _Knobs:
    steps: int
    rate: float = 0.1
    kind: Literal["a", "b"] = "a"
    limit: int | None = None


def test_check_fields_reads_the_annotations_and_names_the_first_bad_field():
    check_fields(_Knobs(steps=3))
    with pytest.raises(ConfigError, match=r"^_Knobs.kind must be one of \['a', 'b'\], got 'c'$"):
        check_fields(_Knobs(steps=3, kind="c"))
    with pytest.raises(ValueError, match=r"^steps must be an integer, got 1.0$"):
        check_fields(_Knobs(steps=1.0), error=ValueError, qualified=False)
    knobs = _Knobs(steps=np.int64(3), rate=np.float32(0.5), limit=np.int32(9))
    check_fields(knobs)  # a frozen dataclass too: numpy scalars become Python numbers
    assert (type(knobs.steps), type(knobs.rate), type(knobs.limit)) == (int, float, int)


def test_gpt_config_takes_numpy_integers_as_ints():
    config = GPTConfig(**{**BASE, "d_model": np.int64(32), "n_heads": np.int32(4)}, dropout=np.float32(0.25))
    assert config == GPTConfig(**BASE, dropout=0.25) and type(config.d_model) is int
    assert type(config.d_ff) is int and type(config.n_kv_heads) is int  # the defaults they derive
    json.dumps(config.to_dict())
    with pytest.raises(ConfigError, match=r"GPTConfig.bias must be true or false, got np.False_"):
        GPTConfig(**BASE, bias=np.False_)
