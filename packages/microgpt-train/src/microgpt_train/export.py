"""The run's deliverable: a model folder = `save_pretrained` + tokenizer files + a model card.

    runs/<name>/model/                      at the end of the run (`export_model`)
    runs/<name>/checkpoints/<step>/model/   at every checkpoint (`write_model_folder`, via orbax)

`microgpt_core.load_pretrained(dir)` and `microgpt_data.Tokenizer.load(dir)` read it back, and so do
`microgpt_infer.load_model` and `evaluate`, which also take the run folder itself. The final folder
is written beside ``model/`` and swapped in as a whole (`microgpt_core.files.replace_folder`): a
kill at any moment leaves the old ``model/`` or the new one, never a mix or none.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from microgpt_core import count_params, save_pretrained
from microgpt_core.files import replace_folder, write_atomic
from microgpt_data import Tokenizer
from microgpt_train.config import RunConfig

__all__ = ["SUMMARY_FILE", "export_model", "model_card", "write_model_folder"]

SUMMARY_FILE = "training_summary.json"


def write_model_folder(
    directory: Path,
    params: Any,
    tokenizer: Tokenizer,
    run: RunConfig,
    summary: dict[str, Any],
    *,
    final: Path | None = None,
) -> Path:
    """Writes the weights, config, tokenizer files, model card and training summary into `directory`
    (host numpy params: gather them first if sharded). Each file is written atomically. The card
    names `final` (default `directory`): where the folder will be read from."""
    directory = Path(directory)
    host = _to_numpy(params)
    save_pretrained(directory, host, run.model)
    tokenizer.save(directory)
    card = model_card(run, summary, count_params(host), final or directory)
    write_atomic(directory / "README.md", card.encode())
    write_atomic(directory / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return directory


def export_model(
    directory: Path, params: Any, tokenizer: Tokenizer, run: RunConfig, summary: dict[str, Any]
) -> Path:
    """Writes the model folder beside `directory`, then swaps it in for the old one in one step."""
    directory = Path(directory)
    staged = directory.with_name(f".{directory.name}.staging-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        write_model_folder(staged, params, tokenizer, run, summary, final=directory)
        return replace_folder(staged, directory)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _where(directory: Path) -> str:
    """`directory` as a user types it from where they ran `train`: relative when below it."""
    try:
        return str(directory.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(directory.resolve())


def model_card(run: RunConfig, summary: dict[str, Any], n_params: int, directory: Path) -> str:
    """A Markdown model card: what the model is, how it was trained, how good it is, how to use it."""
    m = run.model
    eval_loss = summary.get("eval_loss")
    ppl = math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None
    rows = [
        ("parameters", f"{n_params:,}"),
        ("layers x width x heads", f"{m.n_layers} x {m.d_model} x {m.n_heads}"),
        ("context / vocabulary", f"{m.context_length} / {m.vocab_size}"),
        ("positions", m.positional),
        ("training data", f"`{run.data}`"),
        (
            "steps x batch x context",
            f"{summary.get('step')} of {run.max_steps} x {run.batch_size} x {m.context_length}",
        ),
        ("tokens seen", f"{summary.get('tokens', 0):,}"),
        ("validation loss (nats/token)", _fmt(eval_loss)),
        ("validation perplexity", _fmt(ppl)),
        ("unigram baseline (nats/token)", _fmt(summary.get("unigram_entropy"))),
        ("training time (s)", _fmt(summary.get("train_seconds"), 0)),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    sample = summary.get("sample", "")
    where = _where(directory)
    step = summary.get("step")
    status = (
        "the finished run"
        if step == run.max_steps
        else f"a checkpoint at step {step} of {run.max_steps} (the run had not finished)"
    )
    return f"""# {run.name}

A microGPT decoder-only Transformer trained with `microgpt-train`: {status}.

| | |
|---|---|
{table}

## Use

From the folder where `train` ran (this model folder is `{where}`; after `push-to-hub`, its repo id):

```python
import jax
from microgpt_infer import generate, load_model

model = load_model("{where}")
print(generate(model, {run.sample_prompt!r}, rng=jax.random.key(0), max_new_tokens=50))
```

```bash
generate --model {where} {json.dumps(run.sample_prompt)}
```

or, with `microgpt-core` and `microgpt-data` only:

```python
from microgpt_core import load_pretrained
from microgpt_data import Tokenizer

params, config = load_pretrained("{where}")
tokenizer = Tokenizer.load("{where}")
```

## Sample (prompt {run.sample_prompt!r})

```text
{sample}
```

## Limitations

A small model trained briefly on `{run.data}`: it imitates the surface of its training text and
knows no facts. Do not rely on what it writes.

## Training config

```json
{json.dumps(run.to_dict(), indent=2)}
```
"""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
