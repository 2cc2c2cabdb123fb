"""`import microgpt_infer` is light: no network, no JAX, no datasets/optax/orbax until used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("jax", "huggingface_hub", "datasets", "optax", "orbax", "tokenizers", "torch")

CHECK = """
import socket, sys
def no_network(*args, **kwargs):
    raise AssertionError("network used at import")
socket.socket.connect = no_network
socket.create_connection = no_network
import microgpt_infer
print(",".join(m for m in {heavy!r} if m in sys.modules))
from microgpt_infer import Model, generate, generate_text, load_model, push_to_hub
print(",".join(m for m in {heavy!r} if m in sys.modules))
import microgpt_infer.cli, microgpt_infer.hub
print(sorted(set(microgpt_infer.__all__) - set(dir(microgpt_infer))))
"""


def test_import_is_light_and_offline():
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    bare, api, missing = out.stdout.splitlines()
    assert bare == ""  # nothing heavy at all for `import microgpt_infer`
    assert api == "jax"  # the API needs JAX; the Hub client and training libraries load only when used
    assert missing == "[]"
