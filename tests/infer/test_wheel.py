"""microgpt-infer installed alone from wheels, as a user would: no training stack comes with it, and the
model it ships answers the original microGPT's example on first use.

Builds wheels of core, data and infer with `uv build`, creates a fresh venv, and runs
`pip install --find-links DIST microgpt-infer`: our three packages from the wheels, third-party ones
from the package index (pip's cache makes later runs fast). Then, from an empty folder with
`HF_HUB_OFFLINE=1`, a fresh home and none of our environment variables, runs the original's example
verbatim, generates text from a saved model with the installed package and its `generate` command, and
writes an `inspect` page of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFER_COMMANDS = ("generate", "push-to-hub", "export-hf", "inspect")
ABSENT = ("datasets", "optax", "orbax-checkpoint", "tokenizers", "torch", "microgpt-train", "pyarrow")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the wheels")
def test_installs_alone_from_wheels_and_generates(tmp_path, model_dir):
    dist = tmp_path / "dist"
    for package in ("microgpt-core", "microgpt-data", "microgpt-infer"):
        _run(["uv", "build", "-q", "--wheel", "--package", package, "-o", str(dist)], cwd=ROOT, timeout=120)
    wheel = next(dist.glob("microgpt_infer-*.whl"))
    assert wheel.stat().st_size < 15_000_000, f"{wheel.name}: {wheel.stat().st_size:,} bytes"
    with zipfile.ZipFile(wheel) as archive:
        shipped = {Path(n).name for n in archive.namelist() if "/default_model/" in n}
        names = set(archive.namelist())
    assert {"config.json", "model.safetensors", "tokenizer.tiktoken", "README.md"} <= shipped, shipped
    assert "microgpt_infer/pages/inspect.html" in names  # the inspect command's page template
    assert "microgpt_infer/pages/playground.html" in names  # the server's page at /
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    _run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--find-links", str(dist), "microgpt-infer"],
        env=env, timeout=800,
    )  # fmt: skip
    listing = _run([str(python), "-m", "pip", "list", "--format=json"], env=env).stdout
    installed = {re.sub(r"[-_.]+", "-", item["name"]).lower() for item in json.loads(listing)}
    assert {"microgpt-core", "microgpt-data", "microgpt-infer", "jax", "huggingface-hub"} <= installed
    assert not installed & set(ABSENT), sorted(installed & set(ABSENT))
    # Every command it installs works with what it installs (train-tokenizer ships with microgpt-train).
    commands = {p.name for p in bin_dir.iterdir()} & {*INFER_COMMANDS, "train", "evaluate", "train-tokenizer"}
    assert commands == set(INFER_COMMANDS), sorted(commands)
    for command in INFER_COMMANDS:
        assert "usage:" in _run([str(bin_dir / command), "--help"], env=env, timeout=120).stdout

    # The original's example, verbatim but for the import, where a new user would run it.
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    home.mkdir()
    clean = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    example = (
        "import jax\n"
        "from microgpt_infer import generate_text\n"
        "\n"
        "rng = jax.random.PRNGKey(443)\n"
        'text = generate_text(rng=rng, text="Once upon a time")\n'
        "print(text)\n"
    )
    out = _run([str(python), "-c", example], env=clean, cwd=empty, timeout=300)
    assert (
        out.stdout.startswith("Once upon a time") and len(out.stdout.strip()) > len("Once upon a time") + 20
    )
    assert list(empty.iterdir()) == []  # nothing written where it ran
    cli = _run(
        [str(bin_dir / "generate"), "Once upon a time", "--max-new-tokens", "8"],
        env=clean,
        cwd=empty,
        timeout=300,
    )
    assert cli.stdout.startswith("Once upon a time") and "using the model microgpt-infer ships" in cli.stderr
    _run([str(bin_dir / "export-hf"), "default", str(tmp_path / "hf")], env=clean, cwd=empty, timeout=300)
    exported = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= exported, exported

    script = (
        "import jax, microgpt_infer, sys\n"
        "assert microgpt_infer.__file__.startswith(sys.prefix), microgpt_infer.__file__\n"
        "from microgpt_infer import generate_text\n"
        f"print(generate_text(jax.random.key(0), 'Hi', 8, model={str(model_dir)!r}))\n"
    )
    out = _run([str(python), "-c", script], env=env, cwd=tmp_path, timeout=300)
    assert out.stdout.startswith("Hi") and len(out.stdout) > 3
    cli = _run([str(bin_dir / "generate"), "Hi", "--max-new-tokens", "8", "--model", str(model_dir)],
               env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert cli.stdout.startswith("Hi")
    page = tmp_path / "inspect.html"  # the page template ships as package data
    _run([str(bin_dir / "inspect"), "Hi", "--model", str(model_dir), "--out", str(page)],
         env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert 'id="inspection-data"' in page.read_text(encoding="utf-8")
