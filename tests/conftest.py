import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

# Tests run on the package's default backend unless the caller chose one
# (KERAS_BACKEND): importing the package sets it before keras loads. Nothing
# here imports keras: pytest-xdist's controlling process, which runs no test,
# starts the test processes without waiting for a backend to load.
from vggcifar import COMPILE_CACHE_ENV  # (sets KERAS_BACKEND before keras loads)

# JAX runs started by the tests keep their compiled programs in a folder of
# this test process, not in the user's Keras folder (~/.keras/jax-cache).
if COMPILE_CACHE_ENV not in os.environ:
    _cache = tempfile.mkdtemp(prefix="vggcifar-test-jax-cache-")
    os.environ[COMPILE_CACHE_ENV] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# The programs the tests compile are small and run for milliseconds, so XLA's
# compile time is what they wait for, most of it LLVM optimising machine code.
# Tests compile unoptimised machine code from the same programs (the same HLO,
# so XLA's cost analysis, the compile cache and every comparison the tests make
# are as before); each test compares runs compiled alike. Users' runs and the
# benchmarks keep XLA's defaults.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), TEST_XLA_FLAGS]))


# `make test` runs two test processes, one a core: TensorFlow's thread pools,
# one thread each, do not spin on the other process's core (7% less CPU and
# 5% less time on the training tests, measured on 2 cores).
for _pool in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_pool, "1")


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a child process: the tests' flags and ``flags``."""
    return " ".join([TEST_XLA_FLAGS, *flags])


SPEC_TABLE = Path(__file__).with_name("spec_table_channels_first.txt")

# A narrow VGG-16 (1/16 of the filters, 16-unit head) keeps each step in
# milliseconds: as config overrides, and as the command line's --set options.
TINY = dict(width=0.0625, dense_units=16)
TINY_ARGS = ["--set", "width=0.0625", "--set", "dense_units=16"]
# train_run's keyword arguments for a silent run.
QUIET = dict(verbose=0, log=lambda *_: None)


def final_variables(run_dir: Path) -> list:
    """The newest checkpoint's variables, in a fixed order."""
    import numpy as np

    from vggcifar.rundir import RunDir

    with np.load(RunDir(run_dir).list_checkpoints()[-1] / "variables.npz") as z:
        return [z[k] for k in sorted(z.files)]


def wait_for_checkpoint(run: Path, proc, minimum_step: int, timeout: float = 180) -> None:
    """Wait until training process ``proc`` has a checkpoint at ``minimum_step`` or later in ``run``."""
    from vggcifar.rundir import RunDir

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1]) for p in RunDir(run).list_checkpoints()]
        if steps and max(steps) >= minimum_step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {minimum_step}: {proc.stdout.read()}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {minimum_step} or later appeared in {timeout} s")


def after_each_call(monkeypatch, hook) -> dict:
    """Run ``hook(n, train_model, losses)`` after the n-th call (from 1) of every
    training runner made from now on; what it returns is the call's losses.
    Faults are injected here, where the loop reads the steps' results."""
    from vggcifar import loop as T

    calls = {"n": 0}
    real = T.make_runner

    def make(train_model, *args, **kwargs):
        runner = real(train_model, *args, **kwargs)
        run = runner.run

        def hooked(rows):
            losses, accuracies = run(rows)
            calls["n"] += 1
            return hook(calls["n"], train_model, losses), accuracies

        runner.run = hooked
        return runner

    monkeypatch.setattr(T, "make_runner", make)
    return calls
# A process that holds a run folder's lock (argv[1]) until it is killed; it
# says "held" once it has it. It imports no keras: it starts in milliseconds.
LOCK_HOLDER = """
import sys, time
from vggcifar.fsutil import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_lock(folder):
    """A LOCK_HOLDER process on ``folder`` that holds the lock by now."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline().strip()
    if line != "held":
        holder.kill()
        raise AssertionError(f"the lock holder did not take the lock: {line!r}")
    return holder


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def spec_network():
    """The spec's VGG-16 at full size (33.6 M weights, about a second to
    build), built once for the tests that only read it."""
    from vggcifar.model import build_vgg

    return build_vgg()
