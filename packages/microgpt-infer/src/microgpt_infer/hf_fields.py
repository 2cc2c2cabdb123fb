"""The JSON types of the fields of a Hugging Face `config.json`, and the one check of them.

A model folder in Hugging Face's layout (GPT-2's, `gpt2.py`; Llama's, `llama.py`) describes its model
in `config.json`. Python's `bool("false")` is True and `int(16.0)` is 16, so a field is checked as the
JSON value it is, before anything reads it: booleans must be JSON true/false, counts integers >= 1
(not 16.0), epsilons finite positive numbers, and so on. Each module lists its fields with one of
the kinds below (`FIELDS` there); `check_fields` refuses the first value that is not of its kind,
naming the file, the field and the value.

A key that is neither one of those fields nor one that transformers' `PretrainedConfig` writes for
every model (`TRANSFORMERS_KEYS`: architectures, dtype, generation settings, labels, ...; none of
them changes the weights or the arithmetic) is ignored with a warning on the "microgpt_infer" logger
(`warn_unknown_keys`), naming it and the known key it resembles, as transformers' own loaders say
what they ignore: a typo such as `n_layerz` then does not go unnoticed.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from microgpt_core.config import is_integer, is_real
from microgpt_infer.errors import ModelFileError

__all__ = [
    "BOOL",
    "COUNT",
    "COUNT_OR_NULL",
    "ID_OR_NULL",
    "IDS_OR_NULL",
    "NONNEGATIVE",
    "OBJECT_OR_NULL",
    "POSITIVE",
    "PROBABILITY",
    "PROBABILITY_OR_NULL",
    "STR",
    "STR_OR_NULL",
    "STRS_OR_NULL",
    "TRANSFORMERS_KEYS",
    "VALID",
    "check_fields",
    "require_fields",
    "warn_unknown_keys",
]

# What the JSON value of a field must be (the words appear in the error message), and the test of it.
COUNT, COUNT_OR_NULL, ID_OR_NULL = "an integer >= 1", "an integer >= 1 or null", "an integer >= 0 or null"
IDS_OR_NULL = "an integer >= 0, a non-empty list of them, or null"
POSITIVE, NONNEGATIVE, PROBABILITY = "a finite number > 0", "a finite number >= 0", "a number in [0, 1]"
PROBABILITY_OR_NULL = "a number in [0, 1] or null"
BOOL, STR, STR_OR_NULL, STRS_OR_NULL = (
    "true or false",
    "a string",
    "a string or null",
    "a list of strings or null",
)
OBJECT_OR_NULL = "a JSON object or null"

# Keys transformers' PretrainedConfig (4.x and 5.x) writes or reads for every model: bookkeeping, output
# switches, fine-tuning labels, token ids, generation settings saved by older versions. None changes
# the network's weights or arithmetic, so a config.json may carry any of them without a warning.
TRANSFORMERS_KEYS = frozenset({
    "_attn_implementation", "_attn_implementation_autoset", "_commit_hash", "_name_or_path",
    "_num_labels", "add_cross_attention", "architectures", "attn_implementation",
    "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "chunk_size_feed_forward",
    "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty", "do_sample",
    "dtype", "early_stopping", "encoder_no_repeat_ngram_size", "eos_token_id",
    "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id",
    "forced_eos_token_id", "gradient_checkpointing", "id2label", "initializer_range",
    "is_decoder", "is_encoder_decoder", "label2id", "length_penalty", "max_length",
    "max_new_tokens", "min_length", "model_type", "name_or_path", "no_repeat_ngram_size",
    "num_beam_groups", "num_beams", "num_labels", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_past", "output_scores", "pad_token_id", "prefix",
    "problem_type", "pruned_heads", "remove_invalid_values", "repetition_penalty", "return_dict",
    "return_dict_in_generate", "sep_token_id", "suppress_tokens", "task_specific_params",
    "temperature", "tf_legacy_loss", "tie_encoder_decoder", "tie_word_embeddings",
    "tokenizer_class", "top_k", "top_p", "torch_dtype", "torchscript", "transformers_version",
    "typical_p", "use_bfloat16", "use_cache",
})  # fmt: skip
_log = logging.getLogger("microgpt_infer")


def _number(x: object) -> bool:
    return is_real(x) and math.isfinite(x)


def _id(x: object) -> bool:
    return is_integer(x) and x >= 0


VALID = {
    COUNT: lambda x: is_integer(x) and x >= 1,
    COUNT_OR_NULL: lambda x: x is None or (is_integer(x) and x >= 1),
    ID_OR_NULL: lambda x: x is None or _id(x),
    IDS_OR_NULL: lambda x: x is None or _id(x) or (isinstance(x, list) and x != [] and all(map(_id, x))),
    POSITIVE: lambda x: _number(x) and x > 0,
    NONNEGATIVE: lambda x: _number(x) and x >= 0,
    PROBABILITY: lambda x: _number(x) and 0 <= x <= 1,
    PROBABILITY_OR_NULL: lambda x: x is None or (_number(x) and 0 <= x <= 1),
    BOOL: lambda x: isinstance(x, bool),
    STR: lambda x: isinstance(x, str),
    STR_OR_NULL: lambda x: x is None or isinstance(x, str),
    STRS_OR_NULL: lambda x: x is None or (isinstance(x, list) and all(isinstance(i, str) for i in x)),
    OBJECT_OR_NULL: lambda x: x is None or isinstance(x, dict),
}


def check_fields(body: Mapping[str, Any], fields: Mapping[str, str], path: Path | str) -> None:
    """Refuses the first field of `body` listed in `fields` whose value is not of its kind.

    Fields absent from `body` are not checked (see `require_fields`); fields `fields` does not list
    are left alone (checkpoints carry many optional ones).

    Raises:
      ModelFileError: "{path}: field 'x' must be <kind>, got <the JSON value>".
    """
    for field, kind in fields.items():
        if field in body and not VALID[kind](body[field]):
            raise ModelFileError(f"{path}: field {field!r} must be {kind}, got {json.dumps(body[field])}")


def require_fields(body: Mapping[str, Any], names: tuple[str, ...], path: Path | str, layout: str) -> None:
    """Refuses a `body` without one of `names` ("a {layout} config.json has {field}")."""
    for field in names:
        if field not in body:
            raise ModelFileError(f"{path}: field {field!r} is missing; a {layout} config.json has {field}")


def warn_unknown_keys(
    body: Mapping[str, Any], fields: Mapping[str, str], path: Path | str, *, also: Collection[str] = ()
) -> list[str]:
    """Warns, on the "microgpt_infer" logger, about the keys of `body` that are neither in `fields`,
    nor in `TRANSFORMERS_KEYS`, nor in `also`; returns them (sorted).

    One warning names every such key, each with the known key it resembles when there is one
    ("{path}: ignoring unknown key 'n_layerz' (did you mean 'n_layer'?)"), else the layout's fields.
    """
    known = set(fields) | TRANSFORMERS_KEYS | set(also)
    unknown = sorted(key for key in body if key not in known)
    if not unknown:
        return unknown
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    what = "key" if len(unknown) == 1 else "keys"
    message = f"{path}: ignoring unknown {what} {', '.join(named)}"
    if len(named) > sum("did you mean" in n for n in named):
        message += f"; the known fields of this layout are {', '.join(sorted(fields))}"
    _log.warning(message)
    return unknown
