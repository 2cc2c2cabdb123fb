"""`generate` under real signals, as a terminal and `uv run` deliver them: Ctrl-C reaches the whole
process group and `uv run` forwards it once more, so the process gets two SIGINTs a moment apart.

In every phase (loading the model, compiling the generation, decoding) it ends within a moment,
prints `interrupted` on stderr, ends the line it was writing and exits 130; never an abort
(`terminate called ...`, status 134), a lost signal or a traceback."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.terminal import HOW, command, ctrl_c_twice, ended, start


def _start(how: str, args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    """With an empty compilation cache, offline."""
    cache = str(tmp_path / "jax-cache")
    env = {**os.environ, "MICROGPT_COMPILATION_CACHE": cache, "HF_HUB_OFFLINE": "1", **env}
    return start([*command("generate", how), *args], env, tmp_path, text=False)


def _read_until(stream, marker: bytes, proc: subprocess.Popen, timeout: float = 120) -> bytes:
    """What `stream` gave until `marker` appeared in it."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 4096) if ready else b""
        if not chunk:
            proc.kill()
            pytest.fail(f"no {marker!r} within {timeout} s (status {proc.poll()}): {seen!r}")
        seen += chunk
    return seen


def _check_interrupted(proc: subprocess.Popen, err: bytes, seconds: float) -> None:
    text = err.decode()
    assert proc.returncode == 130, text
    assert text.endswith("interrupted\n") and "Traceback" not in text and "terminate called" not in text, text
    assert seconds < 3, seconds  # the 0.3 s between the two signals included


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_ctrl_c_twice_while_it_loads_the_model(tmp_path, long_model_dir, how):
    """The note naming the model is printed just before the model is loaded."""
    proc = _start(how, ["x", "--max-new-tokens", "4000"], tmp_path, MICROGPT_MODEL=str(long_model_dir))
    _read_until(proc.stderr, b"generate: using $MICROGPT_MODEL", proc)
    out, err, seconds = ended(proc, ctrl_c_twice(proc))
    _check_interrupted(proc, err, seconds)
    assert out in (b"", b"\n") or out.endswith(b"\n")


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_ctrl_c_twice_while_it_compiles(tmp_path, long_model_dir, how):
    """The seed is said once the model is loaded, before the generation compiles (seconds, with an
    empty cache): the signals arrive during the compilation, which used to abort the process."""
    proc = _start(how, ["x", "--model", str(long_model_dir), "--max-new-tokens", "4000"], tmp_path)
    _read_until(proc.stderr, b"generate: seed ", proc)
    out, err, seconds = ended(proc, ctrl_c_twice(proc))
    _check_interrupted(proc, err, seconds)
    assert out == b"" or out.endswith(b"\n")  # any text it had started is ended by a line end


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_ctrl_c_twice_while_it_decodes_ends_the_line_it_was_writing(tmp_path, long_model_dir, how):
    args = ["x", "--model", str(long_model_dir), "--max-new-tokens", "4000", "--temperature", "0"]
    proc = _start(how, args, tmp_path)
    first = _read_until(proc.stdout, b"x", proc)
    time.sleep(0.2)  # tokens are streaming
    rest, err, seconds = ended(proc, ctrl_c_twice(proc))
    _check_interrupted(proc, err, seconds)
    out = (first + rest).decode()
    assert out.startswith("x") and out.endswith("\n") and len(out) < 4000  # stopped, not finished


EXPORT_CUT = """
import os, signal, sys, time
from microgpt_infer import cli, export_hf

write = export_hf._write

def write_then_ctrl_c(folder, *args, **kwargs):
    write(folder, *args, **kwargs)  # the staged folder is full: Ctrl-C comes before the swap
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)

export_hf._write = write_then_ctrl_c
sys.exit(cli.export_main([sys.argv[1], sys.argv[2]]))
"""


def test_ctrl_c_during_an_export_leaves_no_staged_folder_and_no_output(tmp_path, model_dir):
    out = tmp_path / "exports" / "hf"
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_CUT, str(model_dir), str(out)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr
    assert list((tmp_path / "exports").iterdir()) == []  # neither OUT_DIR nor .hf.export-*
