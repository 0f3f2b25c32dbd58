"""Host-to-device transfers and XLA compilations of a tiny training run on JAX, as a GPU would pay them.

Each run is ``vggcifar train`` in a fresh process under KERAS_BACKEND=jax with
JAX's transfer guard logging every host-to-device transfer (one line per
device), ``jax_log_compiles`` logging every compilation, and every read of a
device array by the host counted (JAX guards no device-to-host copy on a CPU). The same run is
made for E and 2E epochs; what an epoch costs is the difference divided by E
(start-up and the first epoch's compilations cancel out).

    PYTHONPATH=src python benchmarks/device_trips.py --epochs 2 --devices 1
    PYTHONPATH=src python benchmarks/device_trips.py --epochs 2 --devices 2   # two virtual CPU devices

Prints one JSON object: for each run its transfers, compilations (those of the
training step apart), host reads and whether TensorFlow was imported, then the per-epoch figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys
import jax
import numpy as np
from jax._src import array as jax_array
jax.config.update("jax_transfer_guard_host_to_device", "log_explicit")
jax.config.update("jax_log_compiles", True)

# Reads of a device array by the host: jax.Array._value (float(), .tolist(),
# jax.device_get, np.asarray of a sharded array) and np.asarray/np.array of a
# single-device array (which numpy reads through the buffer protocol on a CPU
# and JAX does not see); a read inside another counted once.
import collections, json, traceback
reads, inside, where = [0], [False], collections.Counter()
def _count():
    reads[0] += 1
    for frame in reversed(traceback.extract_stack()[:-2]):  # the read's innermost caller in the package
        if "vggcifar" in frame.filename:
            where[frame.filename.rsplit("vggcifar", 1)[1].strip("/") + ":" + frame.name] += 1
            break
value = jax_array.ArrayImpl._value
def _value(self):
    if inside[0]:
        return value.fget(self)
    _count()
    inside[0] = True
    try:
        return value.fget(self)
    finally:
        inside[0] = False
jax_array.ArrayImpl._value = property(_value)
def _counted(convert):
    def read(a, *args, **kwargs):
        if inside[0] or not isinstance(a, jax.Array):
            return convert(a, *args, **kwargs)
        _count()
        inside[0] = True
        try:
            return convert(a, *args, **kwargs)
        finally:
            inside[0] = False
    return read
np.asarray, np.array = _counted(np.asarray), _counted(np.array)

from vggcifar.cli import main
status = main(sys.argv[1:])
print(f"@@ where {json.dumps(where)}", file=sys.stderr)
print(f"@@ status {status} tensorflow {'tensorflow' in sys.modules} reads {reads[0]}", file=sys.stderr)
"""


def run(args, epochs: int, folder: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "VGGCIFAR_BACKEND_LOG": "1",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}",
           "VGGCIFAR_JAX_CACHE": os.path.join(folder, "jax-cache") if args.cache else "0"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    argv = ["train", "--dataset", "synthetic", "--limit-train", str(args.images), "--limit-test", "128",
            "--batch-size", str(args.batch_size), "--set", f"width={args.width}", "--set", "dense_units=16",
            "--steps-per-execution", str(args.steps_per_execution), "--epochs", str(epochs),
            "--devices", str(args.devices), "--recipe", args.recipe, "--quiet",
            "--run-dir", os.path.join(folder, f"run-{epochs}")]
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    lines = done.stderr.splitlines()
    end = [line.split() for line in lines if line.startswith("@@ status")]
    if done.returncode != 0 or not end or end[-1][2] != "0":
        raise SystemExit(f"the run failed:\n{done.stderr[-3000:]}")
    compiles = [line for line in lines if "Finished XLA compilation of" in line]
    where = json.loads([line for line in lines if line.startswith("@@ where ")][-1][len("@@ where "):])
    return {"epochs": epochs, "transfers": sum("host-to-device transfer" in line for line in lines),
            "compilations": len(compiles), "step_compilations": sum("jit(step)" in line for line in compiles),
            "reads": int(end[-1][6]), "reads_by_caller": where, "tensorflow_imported": end[-1][4] == "True"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="E: runs of E and 2E epochs")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps-per-execution", type=int, default=8)
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--recipe", default="spec")
    p.add_argument("--cache", action="store_true", help="with JAX's compilation cache (one for both runs)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        runs = [run(args, args.epochs, folder), run(args, 2 * args.epochs, folder)]
    steps = -(-args.images // args.batch_size)
    calls = -(-steps // args.steps_per_execution)
    per_epoch = {key: (runs[1][key] - runs[0][key]) / args.epochs for key in ("transfers", "reads", "compilations")}
    callers = set(runs[0]["reads_by_caller"]) | set(runs[1]["reads_by_caller"])
    per_epoch["reads_by_caller"] = {c: (runs[1]["reads_by_caller"].get(c, 0) - runs[0]["reads_by_caller"].get(c, 0))
                                    / args.epochs for c in sorted(callers)}
    print(json.dumps({"devices": args.devices, "images": args.images, "batch_size": args.batch_size,
                      "steps_per_execution": args.steps_per_execution, "calls_per_epoch": calls, "runs": runs,
                      "per_epoch": per_epoch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
