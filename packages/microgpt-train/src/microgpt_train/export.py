"""The run's deliverable: ``runs/<name>/model/`` = `save_pretrained` + tokenizer files + a model card.

`microgpt_core.load_pretrained(dir)` and `microgpt_data.Tokenizer.load(dir)` read it back, and so does
`microgpt_infer.load_model(dir)`. Written into a temporary folder and renamed over the old one.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from microgpt_core import count_params, save_pretrained
from microgpt_data import Tokenizer
from microgpt_train.config import RunConfig

__all__ = ["export_model", "model_card"]


def export_model(
    directory: Path, params: Any, tokenizer: Tokenizer, run: RunConfig, summary: dict[str, Any]
) -> Path:
    """Writes the model folder atomically (host numpy params: gather them first if sharded)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    host = _to_numpy(params)
    save_pretrained(tmp, host, run.model)
    tokenizer.save(tmp)
    (tmp / "README.md").write_text(model_card(run, summary, count_params(host)))
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def model_card(run: RunConfig, summary: dict[str, Any], n_params: int) -> str:
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
        ("steps x batch x context", f"{summary.get('step')} x {run.batch_size} x {m.context_length}"),
        ("tokens seen", f"{summary.get('tokens', 0):,}"),
        ("validation loss (nats/token)", _fmt(eval_loss)),
        ("validation perplexity", _fmt(ppl)),
        ("unigram baseline (nats/token)", _fmt(summary.get("unigram_entropy"))),
        ("training time (s)", _fmt(summary.get("train_seconds"), 0)),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    sample = summary.get("sample", "")
    return f"""# {run.name}

A microGPT decoder-only Transformer trained with `microgpt-train` (preset-derived config below).

| | |
|---|---|
{table}

## Use

```python
from microgpt_core import load_pretrained
from microgpt_data import Tokenizer

params, config = load_pretrained("{run.name}/model")
tokenizer = Tokenizer.load("{run.name}/model")
```

or `generate --model runs/{run.name}/model` with `microgpt-infer`.

## Sample (prompt {run.sample_prompt!r})

```text
{sample}
```

## Limitations

A small model trained briefly: it imitates the surface of its training text and knows no facts.
Do not rely on what it writes.

## Training config

```json
{json.dumps(run.to_dict(), indent=2)}
```
"""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
