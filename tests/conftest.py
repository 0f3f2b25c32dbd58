import atexit
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
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


# A process's Keras backend, how it was chosen as the package says it, and as
# the environment record keeps it: "BACKEND | CHOICE | CHOICE".
BACKEND_CHOICE_PROBE = ("import vggcifar, keras; from vggcifar import backend; print(keras.backend.backend(), '|', "
                        "vggcifar.BACKEND_CHOICE, '|', backend.environment()['backend_choice'])")

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
            raise AssertionError(f"training ended before step {minimum_step}: {proc.communicate()[0]}")
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


# --------------------------------------------------------------------------- #
# `vggcifar` processes to kill or to signal, forked with their imports done
# --------------------------------------------------------------------------- #
# A process that imports keras, its backend and the command line once, then
# forks a process for each command it is sent: a JSON line with the command's
# arguments, variables to set, code to run first, and the file its output goes
# to (made before the fork, so it is there when its pid is). fork() copies the
# process with its imports done: the command starts at once, where a new
# interpreter would first spend 5 s of CPU importing TensorFlow. Each is a
# process of its own (its pid, its run folder lock, its signals, its exit
# status) that runs cli.main as `python -m vggcifar` does. A thread waits for
# each one and writes its exit status beside its output, renamed into place.
FORKER = r"""
import json, os, sys, threading, traceback
import keras  # noqa: F401
from vggcifar import cli

def reap(pid, path):
    _, status = os.waitpid(pid, 0)
    with open(path + ".tmp", "w") as f:
        f.write(str(os.waitstatus_to_exitcode(status)))
    os.replace(path + ".tmp", path)

def run(job, fd):
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(job["env"])
    status = 1
    try:
        exec(job["setup"], {"__name__": "__setup__"})
        status = cli.main(job["argv"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pid = os.fork()
    if pid == 0:
        run(job, fd)
    os.close(fd)
    threading.Thread(target=reap, args=(pid, job["output"] + ".status"), daemon=True).start()
    print(pid, flush=True)
"""


class Forked:
    """A command in a process of the forker's, with what the tests use of
    subprocess.Popen: its output (stdout and stderr together) as ``stdout``,
    a file read as it grows, and the rest of it from ``communicate``."""

    def __init__(self, pid: int, output: Path):
        self.pid, self.returncode = pid, None
        self._status = output.with_name(output.name + ".status")
        self._output = open(output, encoding="utf-8", errors="replace")
        self._partial = ""

    def poll(self):
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked process {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    @property
    def stdout(self):
        while True:
            ended = self.poll() is not None
            self._partial += self._output.read()
            *lines, self._partial = self._partial.split("\n")
            yield from (line + "\n" for line in lines)
            if ended:
                if self._partial:
                    yield self._partial
                    self._partial = ""
                return
            if not lines:
                time.sleep(0.02)

    def communicate(self, timeout: float | None = None):
        self.wait(timeout)
        rest, self._partial = self._partial + self._output.read(), ""
        self._output.close()
        return rest, None

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@pytest.fixture(scope="session")
def forker(tmp_path_factory):
    """``start(argv, env=None, setup="")``: `vggcifar argv` in a new process,
    forked from one that has imported keras (FORKER); a ``Forked``."""
    proc = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready = proc.stdout.readline().strip()
    folder, count, started = tmp_path_factory.mktemp("forked"), itertools.count(), []

    def start(argv, env=None, setup: str = "") -> Forked:
        assert ready == "ready", "the forker did not start"
        output = folder / f"{next(count)}.txt"
        proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "env": env or {}, "setup": setup,
                                     "output": str(output)}) + "\n")
        proc.stdin.flush()
        started.append(Forked(int(proc.stdout.readline()), output))
        return started[-1]

    yield start
    for forked in started:  # a test that failed before its process ended
        forked.kill()
    proc.stdin.close()
    proc.wait(timeout=60)
