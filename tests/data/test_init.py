"""The package's public surface, and that importing it stays light (no datasets, no tokenizers)."""

from __future__ import annotations

import json
import subprocess
import sys

import microgpt_data


def test_all_names_exist():
    for name in microgpt_data.__all__:
        assert hasattr(microgpt_data, name), name


def _modules_after(statement: str) -> dict:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_import_never_loads_datasets_or_tokenizers():
    for statement in ("import microgpt_data", "from microgpt_data.tokenizer import Tokenizer"):
        loaded = _modules_after(statement)
        assert "datasets" not in loaded, statement
        assert "tokenizers" not in loaded, statement
        assert "requests" not in loaded, statement
        assert "jax" not in loaded, statement
