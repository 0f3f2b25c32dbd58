"""Host-to-device transfers and XLA compilations of a tiny training run on JAX, as a GPU would pay them.

Each run is ``vggcifar train`` in a fresh process under KERAS_BACKEND=jax with
JAX's transfer guard logging every host-to-device transfer (one line per
device) and ``jax_log_compiles`` logging every compilation. The same run is
made for E and 2E epochs; what an epoch costs is the difference divided by E
(start-up and the first epoch's compilations cancel out).

    PYTHONPATH=src python benchmarks/device_trips.py --epochs 2 --devices 1
    PYTHONPATH=src python benchmarks/device_trips.py --epochs 2 --devices 2   # two virtual CPU devices

Prints one JSON object: for each run its transfers, compilations (those of the
training step apart) and whether TensorFlow was imported, then the per-epoch figures.
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
jax.config.update("jax_transfer_guard_host_to_device", "log_explicit")
jax.config.update("jax_log_compiles", True)
from vggcifar.cli import main
status = main(sys.argv[1:])
print(f"@@ status {status} tensorflow {'tensorflow' in sys.modules}", file=sys.stderr)
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
    return {"epochs": epochs, "transfers": sum("host-to-device transfer" in line for line in lines),
            "compilations": len(compiles), "step_compilations": sum("jit(step)" in line for line in compiles),
            "tensorflow_imported": end[-1][4] == "True"}


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
    per_epoch = {key: (runs[1][key] - runs[0][key]) / args.epochs for key in ("transfers", "compilations")}
    print(json.dumps({"devices": args.devices, "images": args.images, "batch_size": args.batch_size,
                      "steps_per_execution": args.steps_per_execution, "calls_per_epoch": calls, "runs": runs,
                      "per_epoch": per_epoch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
