"""The model card: the `README.md` of a model folder, on disk and on the Hugging Face Hub.

One writer for every card (the export of `microgpt-train`, `push-to-hub` of `microgpt-infer`): what
the model is (its configuration), how it was trained and how good it is (the run's summary, when
there is one), and how to use it from where the card is read: the `location` in its snippets is
the folder's path as the user typed it on disk, and the repo id once pushed. `is_generated(text)`
tells a card written here (which `push-to-hub` writes again for the repo id) from a card a user
wrote (which is uploaded as it is).
"""

from __future__ import annotations

import json
import math
from typing import Any

from microgpt_core.config import GPTConfig

__all__ = ["CARD_FILE", "LIBRARIES", "MARKER", "SUMMARY_FILE", "is_generated", "model_card"]

CARD_FILE = "README.md"
SUMMARY_FILE = "training_summary.json"  # a trained model's summary, beside its card

LIBRARIES = ("microgpt", "transformers")  # the library_name values of the cards written here
MARKER = "<!-- microgpt model card: push-to-hub rewrites it for the repo; edit it and it is kept as is -->"
_FRONT_MATTER = """---
library_name: {library}
pipeline_tag: text-generation
tags:
- microgpt
- jax
- text-generation
---
"""


def is_generated(text: str) -> bool:
    """Whether `text` is a card this module wrote and nobody edited since (its marker is intact)."""
    return any(text.startswith(_FRONT_MATTER.format(library=lib)) for lib in LIBRARIES) and MARKER in text


def model_card(
    config: GPTConfig,
    location: str,
    *,
    name: str,
    n_params: int,
    summary: dict[str, Any] | None = None,
    on_hub: bool = False,
    library: str = "microgpt",
) -> str:
    """A Markdown card with Hub metadata.

    Args:
      config: the model's configuration.
      location: what `load_model` takes to read this model where the card is read (a folder path as
        typed from the folder the user works in, or a Hub repo id).
      name: the title (the run's or the repo's name).
      n_params: the parameter count.
      summary: a training run's summary (`training_summary.json`: step, tokens, eval_loss,
        unigram_entropy, train_seconds, sample, and `run`, the run config); None for a model that
        was not trained by microgpt-train.
      on_hub: `location` is a Hub repo id, or the name of the model microgpt-infer ships (the card
        then shows no local-folder snippet).
      library: the Hub's `library_name`: "microgpt" for our layout, "transformers" for a folder in
        Hugging Face's layout (the Hub then shows transformers' snippet and widget).
    """
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {list(LIBRARIES)}, got {library!r}")
    summary = summary or {}
    run = summary.get("run") or {}
    rows = [
        ("parameters", f"{n_params:,}"),
        ("layers x width x heads", f"{config.n_layers} x {config.d_model} x {config.n_heads}"),
        ("context / vocabulary", f"{config.context_length} / {config.vocab_size}"),
        ("positions / norm / MLP", f"{_positions(config)} / {config.norm} / {config.mlp}"),
        ("attention", _attention(config)),
    ]
    if run:
        eval_loss = summary.get("eval_loss")
        ppl = math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None
        if run.get("init_from"):
            rows.append(("fine-tuned from", f"`{run['init_from']}`"))
            rows.append(("validation loss before fine-tuning", _fmt(summary.get("init_eval_loss"))))
        rows += [
            ("training data", f"`{run.get('data')}`"),
            (
                "steps x batch x context",
                f"{summary.get('step')} of {run.get('max_steps')} x "
                f"{run.get('batch_size')} x {config.context_length}",
            ),  # fmt: skip
            ("tokens seen", f"{summary.get('tokens', 0):,}"),
            ("validation loss (nats/token)", _fmt(eval_loss)),
            ("validation perplexity", _fmt(ppl)),
            ("validation bits per byte", _fmt(summary.get("eval_bits_per_byte"))),
            ("unigram baseline (nats/token)", _fmt(summary.get("unigram_entropy"))),
            ("training time (s)", _fmt(summary.get("train_seconds"), 0)),
            ("machine", summary.get("machine", "-")),
            ("weights stored as", f"{run.get('weights_dtype', 'float32')} (they load as float32)"),
        ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    prompt = run.get("sample_prompt", "Once upon a time")
    if not run:
        status = "A microGPT decoder-only Transformer"
    elif summary.get("step") == run.get("max_steps"):
        status = "A microGPT decoder-only Transformer trained with `microgpt-train`: the finished run"
    else:
        status = (
            "A microGPT decoder-only Transformer trained with `microgpt-train`: a checkpoint at step "
            f"{summary.get('step')} of {run.get('max_steps')} (the run had not finished)"
        )
    sections = [
        _FRONT_MATTER.format(library=library),
        MARKER,
        "",
        f"# {name}",
        "",
        f"{status}, stored as `config.json` + `model.safetensors` with its tokenizer files.",
        "",
        "| | |\n|---|---|\n" + table,
        "",
        "## Use",
        "",
        f"`pip install microgpt-infer`, then (`{location}` is this model, as you would name it here):",
        "",
        "```python",
        "import jax",
        "from microgpt_infer import generate, load_model",
        "",
        f"model = load_model({json.dumps(location)})",
        f"print(generate(model, {json.dumps(prompt)}, rng=jax.random.key(0), max_new_tokens=50))",
        "```",
        "",
        "```bash",
        f"generate --model {location} {json.dumps(prompt)}",
        "```",
    ]
    if not on_hub:
        sections += [
            "",
            "Or with `microgpt-core` and `microgpt-data` only:",
            "",
            "```python",
            "from microgpt_core import load_pretrained",
            "from microgpt_data import Tokenizer",
            "",
            f"params, config = load_pretrained({json.dumps(location)})",
            f"tokenizer = Tokenizer.load({json.dumps(location)})",
            "```",
        ]
    if summary.get("sample"):
        sections += ["", f"## Sample (prompt {json.dumps(prompt)})", "", "```text", summary["sample"], "```"]
    if run:
        sections += [
            "",
            "## Limitations",
            "",
            f"A small model trained briefly on `{run.get('data')}`{_DATA.get(run.get('data'), '')}:",
            "it imitates the surface of its training text and knows no facts, so it is no general model:",
            "a prompt from elsewhere gets text in the style of that data. Do not rely on what it writes.",
            "",
            "## Training config",
            "",
            "```json",
            json.dumps(run, indent=2),
            "```",
        ]
    sections += ["", "## Configuration", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    return "\n".join(sections)


# What the built-in corpora are, for the card's limitations.
_DATA = {
    "pydocs": (
        " (English prose from Python's own documentation: the reference manual's topic pages and the"
        " standard library's docstrings)"
    ),
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _positions(config: GPTConfig) -> str:
    return f"rope (theta {config.rope_theta:g})" if config.positional == "rope" else config.positional


def _attention(config: GPTConfig) -> str:
    H, Hkv = config.n_heads, config.n_kv_heads
    kind = (
        "multi-head" if Hkv == H else "multi-query" if Hkv == 1 else f"grouped-query, {Hkv} key/value heads"
    )
    return kind + (", QK-norm" if config.qk_norm else "")
