"""Training as one of several processes: the distributed runtime's timeouts, the supervisor that runs a process's training as its child and reads how it ended, and what a lost peer looks like.

Why a supervisor. JAX's distributed runtime ends a process whose peer is lost
by itself, from one of its C++ threads, through a fatal log (a C++ stack dump
and SIGABRT): when the coordinator (process 0) goes, within milliseconds of the
failed collective that Python sees; when another process goes, once its
heartbeats have been missing for the heartbeat timeout. The callback JAX's
client could take instead cannot be called from Python in jaxlib 0.10 (the
runtime's status has no Python conversion: std::bad_cast), and no Python code
can be sure to run before the abort. So on several processes `vggcifar train`
and `experiment` run their training in a child process, the worker, and the
command's own process only watches it:

- the worker's stdout is the command's; its stderr passes through
  ``WorkerOutput``, which drops the backend's start-up chatter and holds back
  the runtime's error lines from the first one on;
- SIGINT and SIGTERM are passed on to the worker (its loop stops every
  process at the same step); the worker dies with the command (Linux:
  PR_SET_PDEATHSIG), so ``kill -9`` of the command is the loss of the process;
- when the worker ends because a peer was lost (its collective failed, or the
  runtime's abort says so), ``judge`` names the lost process from the
  runtime's own words, and the command says it in one line; any other end
  shows what was held back.

The worker, when a collective fails, waits for the runtime's verdict
(``await_verdict``): it names the lost process. It comes at once when process
0 is lost, after the heartbeat timeout when another one is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from vggcifar.quietlog import SHOW_ENV, backend_log_shown, is_backend_noise

#: The distributed runtime's timeouts in seconds: the environment variable
#: that sets each, and its default (JAX's own, jax.distributed.initialize).
#: initialization: how long processes wait for each other to start; heartbeat:
#: a process silent this long is lost (so the survivors of a lost process other
#: than 0 exit within about this long); shutdown: how long a finished process
#: waits for the others to finish.
TIMEOUTS = {
    "initialization": ("VGGCIFAR_CLUSTER_INIT_SECONDS", 300),
    "heartbeat": ("VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS", 100),
    "shutdown": ("VGGCIFAR_CLUSTER_SHUTDOWN_SECONDS", 300),
}

#: Keras' variables for joining processes (as keras.distribution.initialize
#: reads them), by the argument each stands for.
MULTI_HOST_ENV = {
    "coordinator": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
}

#: Set in the worker's environment to the supervising process's pid.
WORKER_ENV = "VGGCIFAR_CLUSTER_WORKER"

#: How a worker hands its supervisor the collective error that stopped it
#: (one stderr line, never shown).
LOST_MARK = "vggcifar-worker: lost peer: "

#: The worker waits this much longer than the heartbeat timeout for the
#: runtime's verdict before it ends without one.
VERDICT_MARGIN_SECONDS = 30

#: What a collective that failed because a peer went away says, as JAX raises
#: it in Python: Gloo on CPUs (seen here); NCCL on NVIDIA GPUs (its wording for
#: a vanished peer, not seen on this project's machines).
_COLLECTIVE_FAILURE = re.compile(r"Gloo .* failed|gloo/transport|Connection (reset|closed) by peer"
                                 r"|NCCL.*(remote process|unhandled system error)")

#: The runtime's abort, and how it names the lost process.
_RUNTIME_ABORT = "JAX distributed service detected fatal errors"
_TASK_TIMEOUT = re.compile(r"Task (\d+) heartbeat timeout")
_UNHEALTHY = re.compile(r"unhealthy \(stopped sending heartbeats\):\s*([\d,\s]+?)\s*(?:\n\D|$)")
_COORDINATOR_GONE = re.compile(r"Failed to send RPC to coordination service|leader task")
_NEVER_JOINED = "CoordinationService/RegisterTask"  # the processes did not all meet within the initialization timeout

# absl's line format (severity, date, time, thread, file:line), the distributed
# runtime's own sources (their warnings come with a peer's loss, and run on
# over several lines), and the lines of a C++ crash.
_ABSL = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")
_RUNTIME_SOURCE = re.compile(rb"^[IWEF]\d{4} [^\]]* (coordination_\w+|preemption_\w+|client|pair)\.(cc|h):\d+\] ")
_CRASH = re.compile(rb"^(\*\*\* Check failure stack trace|\s+@\s+0x|terminate called|  what\(\))")


def timeouts(environ=None) -> dict[str, int]:
    """The runtime's timeouts in seconds (``TIMEOUTS``), each from its variable when set."""
    environ = os.environ if environ is None else environ
    out = {}
    for key, (var, default) in TIMEOUTS.items():
        text = environ.get(var, "").strip()
        if not text:
            out[key] = default
            continue
        try:
            out[key] = int(text)
        except ValueError:
            out[key] = 0
        if out[key] < 1:
            raise ValueError(f"{var}={text!r} is not a whole number of seconds >= 1; unset it for {default}")
    return out


def wanted(hosts: dict, environ=None) -> bool:
    """Whether a training command joins several processes: ``hosts`` (the
    options, by MULTI_HOST_ENV's keys, None: not given) or Keras' variables say so."""
    environ = os.environ if environ is None else environ
    return any(hosts.get(arg) is not None or environ.get(var) for arg, var in MULTI_HOST_ENV.items())


def collective_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective across processes failing because a peer went away."""
    return bool(_COLLECTIVE_FAILURE.search(str(exc)))


def is_worker() -> bool:
    return bool(os.environ.get(WORKER_ENV))


# --------------------------------------------------------------------------- #
# the worker's side
# --------------------------------------------------------------------------- #
def become_worker() -> None:
    """In the worker, first thing: die with the supervisor (Linux), and leave
    no core file when the runtime aborts it (a core of a training process can
    be gigabytes)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if str(os.getppid()) != os.environ.get(WORKER_ENV):  # the supervisor went before prctl took effect
            os._exit(128 + signal.SIGKILL)


def await_verdict(detail: str, heartbeat_seconds: int) -> None:
    """After a failed collective: hand the supervisor ``detail`` and wait for
    the runtime to name the lost process (it ends this process as it does).
    Returns when no verdict came in time."""
    sys.stdout.flush()
    sys.stderr.write(LOST_MARK + " ".join(detail.split()) + "\n")
    sys.stderr.flush()
    deadline = time.monotonic() + heartbeat_seconds + VERDICT_MARGIN_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.5)


# --------------------------------------------------------------------------- #
# the supervisor's side
# --------------------------------------------------------------------------- #
class WorkerOutput:
    """The worker's stderr, line by line: start-up chatter dropped, our own
    lines passed on, and from the runtime's first error line or distributed
    runtime line on (or the lost-peer note) everything kept as the runtime's
    (the lines of a dying runtime: held back, unless ``show_all``); the
    lost-peer note kept apart."""

    def __init__(self, write, show_all: bool = False):
        self.write, self.show_all = write, show_all
        self.runtime: list[bytes] = []
        self.lost_detail: str | None = None

    def line(self, line: bytes) -> None:
        text = line.rstrip(b"\r\n")
        if text.startswith(LOST_MARK.encode()):
            self.lost_detail = text[len(LOST_MARK):].decode("utf-8", "replace")
            return
        noise = is_backend_noise(text)
        if (self.runtime or self.lost_detail is not None or _RUNTIME_SOURCE.match(text)
                or (not noise and (_ABSL.match(text) or _CRASH.match(text)))):
            self.runtime.append(line)
            noise = not self.show_all
        if self.show_all or not noise:
            self.write(line)

    def runtime_text(self) -> str:
        """The runtime's lines, from its first error line on."""
        return b"".join(self.runtime).decode("utf-8", "replace")

    def held_text(self) -> str:
        """Those of the runtime's lines that were not shown."""
        return "" if self.show_all else self.runtime_text()


@dataclass(frozen=True)
class WorkerEnd:
    """How a worker ended. ``status``: its exit status as a shell reports it
    (128 + the signal that ended it); ``peer_lost``: it stopped because a peer
    process was lost; ``lost``: the process the runtime named (None: it named
    none); ``detail``: how, in a few words; ``held``: the runtime's lines held
    back (to show when the end is not explained); ``never_joined``: the
    runtime gave up waiting for all processes to start; ``signal``: the
    signal that ended the worker (None: it exited)."""

    status: int
    peer_lost: bool
    lost: int | None
    detail: str
    held: str
    never_joined: bool = False  # the processes did not all meet within the initialization timeout
    signal: int | None = None  # the signal that ended the worker, if one did


def judge(returncode: int, output: WorkerOutput) -> WorkerEnd:
    """How the worker that exited with ``returncode`` and said ``output`` ended."""
    status = 128 - returncode if returncode < 0 else returncode
    killed_by = -returncode if returncode < 0 else None
    said = output.runtime_text()
    aborted = _RUNTIME_ABORT in said
    if aborted and _NEVER_JOINED in said:
        return WorkerEnd(status, False, None, "", output.held_text(), never_joined=True, signal=killed_by)
    peer_lost = returncode != 0 and (output.lost_detail is not None or aborted)
    lost, detail = None, output.lost_detail or ""
    if peer_lost and aborted:
        if m := _TASK_TIMEOUT.search(said):
            lost, detail = int(m.group(1)), "its heartbeats stopped"
        elif (m := _UNHEALTHY.search(said)) and m.group(1).strip():
            lost, detail = int(re.split(r"[,\s]+", m.group(1).strip())[0]), "its heartbeats stopped"
        elif _COORDINATOR_GONE.search(said):
            lost, detail = 0, "the coordination service it hosts stopped answering"
    return WorkerEnd(status, peer_lost, lost, detail, output.held_text(), signal=killed_by)


def run_worker(argv: list[str]) -> WorkerEnd:
    """Run ``vggcifar ARGV`` as this process's worker and watch it to its end;
    this process's stderr gets the worker's own lines (see ``WorkerOutput``)."""
    show_all = backend_log_shown()
    # The worker shows its backend's lines unfiltered: its stderr is read here.
    env = {**os.environ, WORKER_ENV: str(os.getpid()), SHOW_ENV: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vggcifar", *argv], stderr=subprocess.PIPE, env=env)

    def forward(signum, frame):
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    err = sys.stderr.buffer

    def write(data: bytes) -> None:
        err.write(data)
        err.flush()

    output = WorkerOutput(write, show_all)
    # Read in a thread: the main thread stays free to run the signal handlers.
    reader = threading.Thread(target=lambda: [output.line(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        returncode = proc.wait()
        reader.join()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return judge(returncode, output)
