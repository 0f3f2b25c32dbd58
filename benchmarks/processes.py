"""Training as several processes on this host, timed: seconds a step on one
process with two (virtual CPU) devices against two processes of one device
each, and seconds until the survivor exits after a process is killed.

    PYTHONPATH=src python benchmarks/processes.py steps --rounds 3 --width 0.25 --dense-units 256
    PYTHONPATH=src python benchmarks/processes.py loss --rounds 3 --heartbeat 10

``steps``: the two layouts run the same `vggcifar train` in turns (A B A B
...), so a slow patch of a shared machine hits both alike. A step's time is
the wall time between two calls' ends within an epoch, as the training loop
runs them (the batch gathered on the host, Keras' train_on_batch, and under
several processes the loop's agreement collective); the first epoch (it
compiles) and each epoch's first step (it follows the evaluation) are left
out. The table gives each layout's median, 10th and 90th percentile, and the
median of the two-process steps over the one-process ones, and the median
time inside the step call itself (train_on_batch and reading the loss; the
rest of a step is the loop's, the agreement collective included).

``loss``: two processes train; once the victim has a checkpoint at step 5,
its command is killed with SIGKILL; the time is until the other process's
command exits, with its status and the number of lines on its stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "VGGCIFAR_BACKEND_LOG")}
    return {**env, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])), **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(a, epochs: int) -> list[str]:
    return ["train", "--dataset", "synthetic", "--limit-train", str(a.images), "--limit-test", "64",
            "--epochs", str(epochs), "--batch-size", str(a.batch_size), "--lr", "0.01", "--seed", "5", "--quiet",
            "--set", f"model={a.model}", "--set", f"width={a.width}", "--set", f"dense_units={a.dense_units}",
            "--devices", "all"]


def _cluster(i: int, port: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]


# --------------------------------------------------------------------------- #
# steps
# --------------------------------------------------------------------------- #
CHILD = r"""
import json, sys, time
from vggcifar import loop
from vggcifar.cli import main

out = open(sys.argv[1], "a", buffering=1)
count = loop._Loop._count

def timed(self, losses, accuracies, images, seconds):
    count(self, losses, accuracies, images, seconds)
    out.write(json.dumps([self.state.epoch, self.state.step_in_epoch, time.perf_counter(), seconds]) + "\n")

loop._Loop._count = timed
sys.exit(main(sys.argv[2:]))
"""


def _step_seconds(path: Path) -> list[tuple[float, float]]:
    """(wall seconds, seconds in the runner's call) of each timed step."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(b[2] - a[2], b[3]) for a, b in zip(rows, rows[1:]) if a[0] == b[0] >= 1]


def run_steps(a) -> dict:
    times = {"1 process x 2 devices": [], "2 processes x 1 device": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for layout in times:
                root = Path(tmp) / f"{r}-{layout[0]}"
                root.mkdir()
                if layout.startswith("1"):
                    cmds = [(_train_args(a, a.epochs) + ["--run-dir", str(root / "r0")],
                             _env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))]
                else:
                    port = _port()
                    # The child is the worker itself (its parent: this script), so the timing hook is in it.
                    cmds = [(_train_args(a, a.epochs) + _cluster(i, port) + ["--run-dir", str(root / f"r{i}")],
                             _env(VGGCIFAR_CLUSTER_WORKER=str(os.getpid()))) for i in (0, 1)]
                procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root / f"t{i}.jsonl"), *argv], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                         for i, (argv, env) in enumerate(cmds)]
                for p in procs:
                    err = p.communicate()[1]
                    if p.returncode:
                        raise SystemExit(f"{layout} failed ({p.returncode}): {err[-2000:]}")
                steps = _step_seconds(root / "t0.jsonl")
                times[layout].extend(steps)
                print(f"round {r + 1} {layout}: median {statistics.median(w for w, _ in steps) * 1000:.1f} ms "
                      f"over {len(steps)} steps", file=sys.stderr)
    summary = {}
    for layout, pairs in times.items():
        values = [w for w, _ in pairs]
        q = statistics.quantiles(values, n=10)
        summary[layout] = {"median_ms": statistics.median(values) * 1000, "p10_ms": q[0] * 1000,
                           "p90_ms": q[-1] * 1000, "steps": len(values),
                           # of it, Keras' train_on_batch and the loss read back (the rest: the loop, the agreement)
                           "median_in_step_call_ms": statistics.median(c for _, c in pairs) * 1000}
    summary["ratio_2proc_over_1proc"] = (summary["2 processes x 1 device"]["median_ms"]
                                         / summary["1 process x 2 devices"]["median_ms"])
    return summary


# --------------------------------------------------------------------------- #
# loss
# --------------------------------------------------------------------------- #
def run_loss(a) -> dict:
    from vggcifar.rundir import RunDir

    out = {0: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for victim in (0, 1):
                root, port = Path(tmp) / f"{r}-{victim}", _port()
                env = _env(VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS=str(a.heartbeat))
                procs = [subprocess.Popen([sys.executable, "-m", "vggcifar", *_train_args(a, 50), *_cluster(i, port),
                                           "--checkpoint-minutes", "0.0001", "--run-dir", str(root / f"r{i}")],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                         for i in (0, 1)]
                try:
                    while not any(int(p.name.split("-")[1]) >= 5 for p in RunDir(root / f"r{victim}").list_checkpoints()):
                        if any(p.poll() is not None for p in procs):
                            raise SystemExit(f"a process ended early: {procs[0].stderr.read()[-2000:]}")
                        time.sleep(0.05)
                    procs[victim].send_signal(signal.SIGKILL)
                    t0 = time.monotonic()
                    err = procs[1 - victim].communicate(timeout=a.heartbeat + 300)[1]
                    seconds = time.monotonic() - t0
                finally:
                    for p in procs:
                        if p.poll() is None:
                            p.kill()
                status = procs[1 - victim].returncode
                out[victim].append({"seconds": seconds, "status": status, "stderr_lines": len(err.splitlines())})
                print(f"round {r + 1} process {victim} killed: survivor exits after {seconds:.2f} s, status {status}, "
                      f"{len(err.splitlines())} stderr line(s)", file=sys.stderr)
    return {f"process {v} killed": {"median_s": statistics.median(x["seconds"] for x in runs),
                                    "min_s": min(x["seconds"] for x in runs), "max_s": max(x["seconds"] for x in runs),
                                    "statuses": sorted({x["status"] for x in runs}),
                                    "stderr_lines": sorted({x["stderr_lines"] for x in runs})}
            for v, runs in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("steps", "loss"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="vgg11")
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--dense-units", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=512, help="training images (steps: per epoch / batch size)")
    p.add_argument("--epochs", type=int, default=3, help="steps: epochs a run (the first is not timed)")
    p.add_argument("--heartbeat", type=int, default=10, help="loss: the runtime's heartbeat timeout in seconds")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("KERAS_BACKEND", "jax")  # what the runs use; lighter to import than the default
    from vggcifar.backend import cpu_name  # noqa: E402 (keras: after the arguments)

    result = run_steps(a) if a.what == "steps" else run_loss(a)
    print(json.dumps({"what": a.what, "cpu": cpu_name(), "args": vars(a), "result": result}, indent=2))


if __name__ == "__main__":
    main()
