"""Checkpoints: each holds a loadable model folder; a train state with Muon's optimiser state comes
back bit for bit and steps on as the unbroken one; an unreadable newest one falls back to the one
before with a warning naming it; a full disk is one line that says so, and keeps what was there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from microgpt_train import RunConfig, init_state, make_optimizer
from microgpt_train.checkpointing import CheckpointReadError, Checkpoints, abstract_like

from .conftest import TINY_MODEL, subprocess_env


def _state(value: float) -> dict:
    return {"w": jnp.full((4, 3), value, jnp.float32), "step": jnp.asarray(int(value), jnp.int32)}


def _marker(folder: Path) -> None:
    (folder / "weights.txt").write_text("model folder")


@pytest.fixture
def saved(tmp_path) -> Checkpoints:
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep=3)
    for step in (1, 2, 3):
        checkpoints.save(step, _state(step), {"step": step, "loader": {"at": step}}, _marker)
    yield checkpoints
    checkpoints.close()


def test_each_checkpoint_holds_a_model_folder(saved):
    assert saved.manager.all_steps() == [1, 2, 3]
    for step in (1, 2, 3):
        assert (saved.directory / str(step) / "model" / "weights.txt").read_text() == "model folder"
    step, state, meta = saved.restore(abstract_like(_state(0)))
    assert step == 3 and meta["loader"] == {"at": 3}
    np.testing.assert_array_equal(state["w"], np.full((4, 3), 3.0))


def test_a_muon_train_state_comes_back_bit_for_bit_and_steps_on_identically(tmp_path):
    run = RunConfig(model=TINY_MODEL, sample_tokens=8, warmup_steps=1, optimizer="muon")
    optimizer = make_optimizer(run)

    @jax.jit
    def step(state, grads):  # the train step's update, on given gradients
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}

    state = init_state(jax.random.PRNGKey(0), TINY_MODEL, optimizer)
    rng = np.random.default_rng(0)
    draw = lambda x: rng.standard_normal(x.shape, np.float32)  # noqa: E731
    grads = [jax.tree.map(draw, state["params"]) for _ in range(4)]
    for g in grads[:2]:
        state = step(state, g)
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep=1)
    try:
        checkpoints.save(2, state, {"step": 2, "loader": {}}, _marker)
        _, restored, _ = checkpoints.restore(abstract_like(state))
    finally:
        checkpoints.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    is_muon = lambda node: hasattr(node, "ns_coeffs")  # noqa: E731  (optax's MuonState)
    (muon,) = [s for s in jax.tree.leaves(restored["opt_state"], is_leaf=is_muon) if is_muon(s)]
    assert int(muon.count) == 2 and len(jax.tree.leaves(muon.mu)) == 4  # w_qkv, w_out, w_in, w_out
    for g in grads[2:]:  # the unbroken state and the restored one, two more steps each
        state, restored = step(state, g), step(restored, g)
    for ours, theirs in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(ours).tobytes() == np.asarray(theirs).tobytes()


def _truncate_state(folder: Path) -> None:
    for path in (folder / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 64:
            path.write_bytes(path.read_bytes()[:16])


def _garbage_meta(folder: Path) -> None:
    for path in (folder / "meta").iterdir():
        path.write_text("{not json")


def _no_state(folder: Path) -> None:
    shutil.rmtree(folder / "state")


def _other_step_meta(folder: Path) -> None:
    for path in (folder / "meta").iterdir():
        path.write_text(json.dumps({"step": 99, "loader": {}}))


@pytest.mark.parametrize("damage", [_truncate_state, _garbage_meta, _no_state, _other_step_meta])
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(saved, damage):
    damage(saved.directory / "3")
    warnings = []
    step, state, meta = saved.restore(abstract_like(_state(0)), warn=warnings.append)
    assert step == 2 and meta["loader"] == {"at": 2} and int(state["step"]) == 2
    assert (
        len(warnings) == 1 and "checkpoint step 3" in warnings[0] and "falling back to step 2" in warnings[0]
    )
    # Out of the way: the step number is free again, the damaged files are kept for a look.
    assert (saved.directory / "3.unreadable").is_dir() and not (saved.directory / "3").exists()
    assert saved.manager.all_steps() == [1, 2]
    saved.save(3, _state(30), {"step": 3, "loader": {"at": 30}}, _marker)
    assert saved.restore(abstract_like(_state(0)))[0] == 3


def test_no_readable_checkpoint_is_one_error(saved):
    for step in (1, 2, 3):
        _garbage_meta(saved.directory / str(step))
    warnings = []
    with pytest.raises(CheckpointReadError, match="no checkpoint in .* can be read .*step 3.*step 2.*step 1"):
        saved.restore(abstract_like(_state(0)), warn=warnings.append)
    assert len(warnings) == 3 and "no older checkpoint" in warnings[-1]


# --------------------------------------------------------------------------------------------------
# A full disk, for real: a small tmpfs in a private mount namespace (root, or an unprivileged user
# namespace), with the run folder on it.
def _namespace_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("the full-disk test needs util-linux's unshare to mount a small tmpfs")
    prefix = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--mount"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.fail(f"cannot make a mount namespace for the full-disk test: {probe.stderr.strip()}")
    return prefix


@pytest.mark.slow
def test_a_full_disk_keeps_the_checkpoints_and_model_and_says_so(tmp_path, tiny_run_dir):
    mount = tmp_path / "disk"
    mount.mkdir()
    folder = mount / tiny_run_dir.name
    py = sys.executable
    script = textwrap.dedent(f"""
        set -e
        mount -t tmpfs -o size=4m tmpfs {mount}
        cp -r {tiny_run_dir} {folder}
        # Fill the disk, leaving a few kilobytes: the next checkpoint cannot fit.
        free=$(df -k --output=avail {mount} | tail -1)
        dd if=/dev/zero of={mount}/filler bs=4k count=$(( free / 4 - 4 )) 2>/dev/null
        set +e
        {py} -m microgpt_train.cli --resume --runs-dir {mount} --name {folder.name} --max-steps 12 \
            --tracker "" > {tmp_path}/full.out 2> {tmp_path}/full.err
        echo $? > {tmp_path}/full.code
        set -e
        ls {folder}/checkpoints > {tmp_path}/steps.after
        cmp {folder}/model/model.safetensors {tiny_run_dir}/model/model.safetensors
        cmp {folder}/model/README.md {tiny_run_dir}/model/README.md
        {py} -c "from microgpt_core import load_pretrained as l; l('{folder}/checkpoints/6/model')"
    """)  # fmt: skip
    env = subprocess_env()
    done = subprocess.run([*_namespace_prefix(), "bash", "-c", script], capture_output=True, text=True,
                          timeout=240, env=env)  # fmt: skip
    read = lambda name: (tmp_path / name).read_text() if (tmp_path / name).exists() else ""  # noqa: E731
    err = read("full.err")
    assert done.returncode == 0, done.stderr[-2000:] + err[-2000:]
    assert read("full.code").strip() == "1", err
    assert err.count("\n") == 1 and err.startswith("error: no space left on the device"), err
    assert "checkpoint step 9" in err and "the earlier checkpoints (steps 3, 6) are intact" in err
    assert read("steps.after").split() == ["3", "6"]
    assert "resumed from step 6" in read("full.out")
