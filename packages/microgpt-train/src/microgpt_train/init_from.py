"""Fine-tuning: a run that starts from a model instead of fresh weights (`RunConfig.init_from`).

    uv run train --init-from default --data notes.txt --max-steps 200 --learning-rate 3e-4

The source is any name `microgpt_infer.load_model` takes: "default" (the shipped model), a model
folder (ours, or GPT-2 or Llama in Hugging Face's layout), a run folder, a Hub id. It gives the
run three things, as `from_pretrained` does in Hugging Face's libraries:

- the architecture: ``run.model`` is the source's `GPTConfig`. A model field the user sets (a flag,
  a TOML key) must repeat the source's value, else `RunConfigError` names the field; only
  `FREE_FIELDS` (dropout, compute dtype, attention kernel) may differ, as they change neither the
  weights' shapes nor what the weights compute. Those the user does not set are the source's;
- the weights: step 0's parameters (the optimiser state is fresh, as is the schedule);
- the tokenizer (so ``--tokenizer`` cannot be given too), and with it the model folder the run
  exports keeps it.

On chat data (`--data chat.jsonl`, `chat_data.py`) the source becomes a chat model first: its
tokenizer may gain the chat template's special tokens, and then its vocabulary (``vocab_size``, the
one architecture field that changes) and embeddings grow to hold them.

The run's own fields (data, steps, learning rate and schedule, batch, seed...) apply as for any
run. `resolve_init_from` makes the run config (the `train` command calls it before the run; a
Python caller calls it too), `load_source` reads the source when the run is built and checks that
the run's model is the source's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from microgpt_core import GPTConfig
from microgpt_data.chats import is_chat_data
from microgpt_infer.chat import load_chat_template
from microgpt_train.chat_data import chat_model, chat_tokenizer
from microgpt_train.config import RunConfig, RunConfigError

__all__ = ["FREE_FIELDS", "load_source", "resolve_init_from", "source_config"]

# Model fields a fine-tuning run may set differently from its source: they change no weight's shape
# and (up to float rounding, and dropout only in training) no output.
FREE_FIELDS = ("dropout", "compute_dtype", "attention")


def source_config(source: str, *, log: Callable[[str], None] | None = None) -> GPTConfig:
    """The `GPTConfig` of the model `source` names, from its config.json alone (no weights read)."""
    from microgpt_infer import resolve_model
    from microgpt_infer.folder import load_folder_config

    return load_folder_config(resolve_model(source, log=log))


def resolve_init_from(run: RunConfig, given: Iterable[str] = (), *, log=None) -> RunConfig:
    """`run` with the model of its source, `run.init_from` (`run` itself when it has none).

    Args:
      run: a run config whose `init_from` names a model.
      given: the model fields the user set (command-line flags, TOML keys), read from `run.model`:
        those in `FREE_FIELDS` are kept, any other must equal the source's value.
      log: called with a note when a run folder's checkpoint stands in for its missing model.
    Returns:
      The run config with ``model`` = the source's config and the given free fields.
    Raises:
      RunConfigError: a given field contradicts the source (names the field, both values and what
        may be set).
      microgpt_infer's errors: the source cannot be found or read (they name it).
    """
    if not run.init_from:
        return run
    source = source_config(run.init_from, log=log)
    if is_chat_data(run.data, run.text_column):  # the vocabulary holds the chat template's tokens
        from microgpt_infer import resolve_model
        from microgpt_infer.folder import load_folder_tokenizer

        folder = resolve_model(run.init_from, log=log)
        tokenizer = chat_tokenizer(load_folder_tokenizer(folder), load_chat_template(folder))
        source = source.replace(vocab_size=max(source.vocab_size, tokenizer.vocab_size))
    given = set(given)
    clash = _contradictions(run.model, source, given)
    if clash:
        field, mine, theirs = clash[0]
        raise RunConfigError(
            f"--{field.replace('_', '-')} {_shown(mine)} contradicts --init-from {run.init_from}, whose "
            f"{field} is {_shown(theirs)}: a fine-tuned model keeps its source's architecture (only "
            f"{', '.join(f.replace('_', '-') for f in FREE_FIELDS)} may be set); drop the flag"
        )
    free = {f: getattr(run.model, f) for f in FREE_FIELDS if f in given}
    return dataclasses.replace(run, model=source.replace(**free))


def load_source(run: RunConfig, *, log: Callable[[str], None] | None = None) -> Any:
    """The source model of `run` (`microgpt_infer.Model`: params, config, tokenizer, source folder),
    made a chat model for chat data (`chat_data.chat_model`), checked against the run's model: every
    field but `FREE_FIELDS` must be the source's.

    Raises:
      RunConfigError: the run's model differs from the source's (names every field; a run config
        made by `resolve_init_from` never does).
    """
    from microgpt_infer import resolve_model
    from microgpt_infer.folder import load_folder

    model = load_folder(resolve_model(run.init_from, log=log))
    if is_chat_data(run.data, run.text_column):
        model = chat_model(model)
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    clash = _contradictions(run.model, model.config, fields)
    if clash:
        listed = "; ".join(
            f"{f} {_shown(mine)} (the model has {_shown(theirs)})" for f, mine, theirs in clash
        )
        raise RunConfigError(
            f"the run's model differs from its init_from model {run.init_from} ({model.source}) in "
            f"{listed}; resolve_init_from(run) gives the run the source's architecture"
        )
    return model


def _contradictions(model: GPTConfig, source: GPTConfig, fields: set[str]) -> list[tuple[str, Any, Any]]:
    """(field, the run's value, the source's) for each of `fields` but `FREE_FIELDS` that differs."""
    names = [f.name for f in dataclasses.fields(GPTConfig) if f.name in fields and f.name not in FREE_FIELDS]
    return [
        (f, getattr(model, f), getattr(source, f)) for f in names if getattr(model, f) != getattr(source, f)
    ]


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
