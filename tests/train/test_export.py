"""The final model folder is swapped in whole: `kill -9` at any moment of an export leaves the old
`model/` or the new one (never none, never a mix); where the OS cannot exchange two folders, an
export cut off between its two renames is repaired by the next one."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from microgpt_core import GPTConfig, load_pretrained, param_shapes
from microgpt_core import files as core_files
from microgpt_core.params import unflatten
from microgpt_data import Tokenizer
from microgpt_train import RunConfig
from microgpt_train.export import export_model

# About 12 MB of weights: an export takes long enough for a kill to land inside it.
BIG = GPTConfig(vocab_size=257, context_length=64, d_model=256, n_layers=4, n_heads=4)


def _tokenizer() -> Tokenizer:
    return Tokenizer({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256}, name="bytes")


def _params(seed: int):
    rng = np.random.default_rng(seed)
    return unflatten(
        {name: rng.standard_normal(shape, np.float32) for name, shape in param_shapes(BIG).items()}
    )


def _run() -> RunConfig:
    return RunConfig(model=BIG, name="big", sample_tokens=8)


@pytest.mark.slow
def test_kill_9_during_an_export_leaves_a_whole_model(tmp_path):
    model = tmp_path / "run" / "model"
    model.parent.mkdir()
    run = _run()
    versions = {}
    for seed in (1, 2):  # the two versions an export can leave behind
        folder = export_model(tmp_path / f"v{seed}", _params(seed), _tokenizer(), run, {"step": seed})
        versions[(folder / "model.safetensors").read_bytes()] = seed
    export_model(model, _params(1), _tokenizer(), run, {"step": 1})
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.train.test_export import _params, _run, _tokenizer
        from microgpt_train.export import export_model
        params = {{seed: _params(seed) for seed in (1, 2)}}
        print("ready", flush=True)
        for i in range(1000):
            seed = 2 - i % 2
            export_model({str(model)!r}, params[seed], _tokenizer(), _run(), {{"step": seed}})
    """)
    rng = random.Random()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6))  # several exports in, one of them under way
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        params, config = load_pretrained(model)  # whole: it loads, with every tensor checked
        assert config == BIG
        seed = versions.get((model / "model.safetensors").read_bytes())
        assert seed in (1, 2), "model.safetensors is neither version"
        assert json.loads((model / "training_summary.json").read_text())["step"] == seed  # not a mix
        assert Tokenizer.load(model) == _tokenizer()


def test_an_export_cut_between_two_renames_is_repaired(tmp_path, monkeypatch):
    model = tmp_path / "model"
    run = _run()
    export_model(model, _params(1), _tokenizer(), run, {"step": 1})
    monkeypatch.setattr(core_files, "_exchange", lambda a, b: False)  # an OS with no atomic exchange
    real_replace = core_files.os.replace

    def dies_after_moving_the_old_model_aside(src, dst):
        real_replace(src, dst)
        if Path(src) == model:
            raise KeyboardInterrupt  # the process dies here: model/ is gone, .model.old holds it

    monkeypatch.setattr(core_files.os, "replace", dies_after_moving_the_old_model_aside)
    with pytest.raises(KeyboardInterrupt):
        export_model(model, _params(2), _tokenizer(), run, {"step": 2})
    monkeypatch.setattr(core_files.os, "replace", real_replace)
    assert not model.exists() and (tmp_path / ".model.old").is_dir()
    core_files.restore_folder(model)  # what the next export (or load) does first
    assert json.loads((model / "training_summary.json").read_text())["step"] == 1
    export_model(model, _params(2), _tokenizer(), run, {"step": 2})
    assert json.loads((model / "training_summary.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_weights_dtype_bfloat16_exports_a_folder_half_the_size_that_loads_as_float32(tmp_path):
    config = GPTConfig(vocab_size=257, context_length=16, d_model=32, n_layers=1, n_heads=2)
    params = unflatten({n: np.full(s, 1 / 3, np.float32) for n, s in param_shapes(config).items()})
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        run = RunConfig(model=config, name=dtype, sample_tokens=8, weights_dtype=dtype)
        folder = export_model(tmp_path / dtype / "model", params, _tokenizer(), run, {"step": 1})
        sizes[dtype] = (folder / "model.safetensors").stat().st_size
        loaded, _ = load_pretrained(folder)
        value = loaded["embed"]["tokens"]
        assert value.dtype == np.float32
        assert float(value[0, 0]) == (np.float32(1 / 3) if dtype == "float32" else 0.333984375)  # bf16's 1/3
        assert f"| weights stored as | {dtype} (they load as float32) |" in (folder / "README.md").read_text()
    assert sizes["bfloat16"] < 0.55 * sizes["float32"]
