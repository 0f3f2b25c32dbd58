"""What this process computes on: the Keras backend, its accelerators, the conv layout, the precision, the devices and process slot of a run, and the record of it all.

Each backend is asked about its accelerators in one place (``accelerators``);
the layout, the precision, the device list and the environment record are
read off that answer. Importing this module imports keras, so only commands
that build or run a model import it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import keras

#: The conv layout each backend trains faster in, measured on the spec network
#: (docs/performance.md): torch's oneDNN convolutions run channels-first
#: 1.07-1.10x faster; TensorFlow's CPU kernels want channels-last (channels-first
#: 0.94x); JAX: no clear difference, its native layout kept.
DATA_FORMATS_BY_BACKEND = {"torch": "channels_first", "tensorflow": "channels_last", "jax": "channels_last"}

#: The backends on which keras.distribution trains data-parallel.
DISTRIBUTED_BACKENDS = ("jax",)

#: CPU features with which bfloat16 training beats float32, per backend, as
#: measured (docs/performance.md, "bfloat16 on CPUs"): TensorFlow 2.21 on a Zen 4
#: EPYC with avx512_bf16 (no AMX) trains the spec network 1.57x faster than in
#: float32; on a Xeon with AMX-BF16, TensorFlow 1.37-1.50x and Keras on torch
#: 1.25-1.30x. JAX's CPU backend is not measured: it stays in float32.
CPU_BFLOAT16 = {"tensorflow": ("amx_bf16", "avx512_bf16"), "torch": ("amx_bf16",)}

#: Training steps per compiled call by device kind ("auto"; docs/performance.md,
#: "Steps per call"). CPU, measured: 8 steps a call trained the spec network
#: 1.03x (float32) and 1.05x (bfloat16) as fast as 1, inside the windows'
#: spread, so one step a call keeps Ctrl-C and checkpoints prompt. GPU, not
#: yet measured on this project's own runs: a step of the spec network is
#: milliseconds of work and the host's round trip per call dominated it
#: (13.9 ms a step at batch 32 on an H200), so 32 steps share one round trip;
#: benchmarks/gpu.sh times K=1 against it.
STEPS_PER_EXECUTION = {"cpu": 1, "gpu": 32}


def name() -> str:
    """The Keras backend this process runs on."""
    return keras.backend.backend()


@dataclass(frozen=True)
class Accelerators:
    """What a backend sees besides the CPU: none (count 0), or its GPUs."""

    kind: str = "cpu"  # "cpu", "gpu" (or JAX's platform name)
    name: str = ""
    count: int = 0
    bfloat16: bool = False  # computes in bfloat16 natively (tensor cores from compute capability 8.0)


@functools.cache
def accelerators(backend: str | None = None) -> Accelerators:
    """The accelerators ``backend`` (default: the current one) can use; asked
    once per process. Discovery failing means none."""
    backend = backend or name()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return Accelerators("gpu", torch.cuda.get_device_name(0), torch.cuda.device_count(),
                                    bool(torch.cuda.is_bf16_supported()))
        elif backend == "jax":
            import jax

            devs = jax.devices()
            if devs and devs[0].platform != "cpu":
                return Accelerators(devs[0].platform, devs[0].device_kind, len(devs), devs[0].platform == "gpu")
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0,))
                return Accelerators("gpu", gpus[0].name, len(gpus), tuple(capability) >= (8, 0))
    except Exception:  # device discovery is informative only: no accelerator
        pass
    return Accelerators()


# --------------------------------------------------------------------------- #
# what "auto" means here
# --------------------------------------------------------------------------- #
def resolve_data_format(data_format: str, backend: str | None = None) -> str:
    """The layout a config's ``data_format`` means on ``backend`` (default: the current one)."""
    if data_format != "auto":
        return data_format
    return DATA_FORMATS_BY_BACKEND.get(backend or name(), "channels_last")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bfloat16(backend: str | None = None) -> str | None:
    """The CPU feature with which ``backend`` trains faster in bfloat16
    (CPU_BFLOAT16), or None."""
    flags = cpu_flags()
    return next((f for f in CPU_BFLOAT16.get(backend or name(), ()) if f in flags), None)


def resolve_precision(precision: str) -> str:
    """"auto": bfloat16 mixed precision where the device computes in it (a GPU
    with bfloat16 tensor cores; with no accelerator, a CPU with bfloat16 units
    this backend uses), else float32."""
    if precision != "auto":
        return precision
    acc = accelerators()
    fast = acc.bfloat16 if acc.count else cpu_bfloat16() is not None
    return "mixed_bfloat16" if fast else "float32"


def resolve_steps_per_execution(steps: int | str) -> int:
    """"auto": STEPS_PER_EXECUTION for the device kind this process trains on."""
    if steps != "auto":
        return steps
    return STEPS_PER_EXECUTION["gpu" if accelerators().count else "cpu"]


def set_precision(precision: str) -> str:
    """Make ``precision`` (resolved) the dtype policy of the layers built next; returns it."""
    precision = resolve_precision(precision)
    keras.config.set_dtype_policy(precision)
    return precision


# --------------------------------------------------------------------------- #
# devices and processes
# --------------------------------------------------------------------------- #
def visible_devices(backend: str | None = None) -> list[str]:
    """The accelerators (else CPUs) the backend trains on, across all hosts."""
    backend = backend or name()
    if backend in DISTRIBUTED_BACKENDS:
        return list(keras.distribution.list_devices())
    return [f"device:{i}" for i in range(accelerators(backend).count or 1)]


def resolve_devices(devices: int | str, batch_size: int, backend: str | None = None) -> list[str]:
    """The devices a config's ``devices`` ("all" or a count) means here.

    Raises ValueError, naming the fix, when the backend cannot train on more
    than one device, when fewer are visible, or when the batch does not split
    evenly among them.
    """
    backend = backend or name()
    visible = visible_devices(backend)
    count = len(visible) if devices == "all" else devices
    if count > 1 and backend not in DISTRIBUTED_BACKENDS:
        raise ValueError(f"training on {count} devices needs the JAX backend (keras.distribution), "
                         f"not {backend}: run with KERAS_BACKEND=jax, or pass --devices 1")
    if count > len(visible):
        raise ValueError(f"devices={devices} asks for more devices than the {len(visible)} visible "
                         f"({', '.join(visible)}); pass --devices {len(visible)} or --devices all")
    chosen = visible[:count]
    if batch_size % len(chosen):
        raise ValueError(f"batch_size={batch_size} does not split evenly among {len(chosen)} devices; "
                         f"pass a --batch-size that is a multiple of {len(chosen)}")
    return chosen


def device_scope(devices: list[str]):
    """A context in which models are built and trained on ``devices`` (from
    ``resolve_devices``): on more than one, variables are replicated and each
    step's batch is split along its first axis (keras.distribution.DataParallel;
    its scope sets keras' global distribution and restores the previous one)."""
    if len(devices) == 1:
        return contextlib.nullcontext()
    return keras.distribution.DataParallel(devices=devices).scope()


@functools.cache
def process_slot() -> tuple[int, int]:
    """(process count, this process's index): (1, 0) but in a cluster of JAX
    processes (``initialize_hosts``). Fixed for the life of the process, so looked up once."""
    if name() not in DISTRIBUTED_BACKENDS:
        return 1, 0
    import jax

    return jax.process_count(), jax.process_index()


def several_processes() -> bool:
    """Whether this process trains as one of several (``process_slot``)."""
    return process_slot()[0] > 1


def _env_int(var: str) -> int | None:
    text = os.environ.get(var, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{var}={text!r} is not a whole number") from None


def initialize_hosts(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a cluster of JAX processes; it must happen before anything computes.

    What is not given is read from Keras' variables (KERAS_DISTRIBUTION_*,
    as keras.distribution.initialize reads them), then by JAX from the cluster's
    (SLURM, Open MPI). jax.distributed.initialize is called here, not through
    keras.distribution.initialize, which passes it none of the runtime's
    timeouts (vggcifar.cluster.TIMEOUTS) and draws a seed that every run here
    sets itself.
    """
    if name() != "jax":
        raise ValueError(f"multi-host training needs the JAX backend, not {name()}: run with KERAS_BACKEND=jax")
    from vggcifar import cluster

    env = cluster.MULTI_HOST_ENV
    coordinator = coordinator or os.environ.get(env["coordinator"]) or None
    num_processes = _env_int(env["num_processes"]) if num_processes is None else num_processes
    process_id = _env_int(env["process_id"]) if process_id is None else process_id
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is outside 0..{num_processes - 1}")
    import jax

    limits = cluster.timeouts()
    coordinator = coordinator.split(",")[0] if coordinator else None  # Keras' list of all job addresses
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=limits["initialization"],
                                   heartbeat_timeout_seconds=limits["heartbeat"],
                                   shutdown_timeout_seconds=limits["shutdown"])
    except (ValueError, TypeError) as exc:  # what is missing, after JAX looked at SLURM's and Open MPI's variables
        raise ValueError(f"cannot join the processes ({exc}): pass --coordinator HOST:PORT (process 0's address), "
                         "--num-processes N and --process-id I, or start them under SLURM or Open MPI") from None


def leave_hosts() -> None:
    """After a run that every process finished alike: wait for the others and
    leave the cluster (a barrier, up to the shutdown timeout)."""
    import jax

    jax.distributed.shutdown()


def agree_max(values) -> list[int]:
    """The element-wise maximum of ``values`` (small integers) over all
    processes; ``values`` itself in a single process. With several, a
    collective: every process calls it at the same point of its run."""
    values = [int(v) for v in values]
    return [int(v) for v in gather_ints(values, len(values)).max(axis=0)]


def gather_ints(values, width: int) -> np.ndarray:
    """Every process's ``values`` (at most ``width`` small integers each), one
    row per process in process order, padded with -1; a collective as ``agree_max``."""
    values = [int(v) for v in values][:width]
    row = np.full(width, -1, np.int32)
    row[:len(values)] = values
    count, _ = process_slot()
    if count == 1:
        return row[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(row)).reshape(count, width)


def describe() -> str:
    """One line: the backend, how it was chosen, and the device it trains on."""
    import vggcifar

    dev = device_info()
    return f"backend: {name()} ({vggcifar.BACKEND_CHOICE}), on {dev['name']} ({dev['kind']})"


def set_torch_threads(threads: int) -> None:
    """The torch backend's intra-op thread count (other backends have no such knob here)."""
    if name() != "torch":
        raise ValueError(f"--threads is for the torch backend; this one is {name()}")
    import torch

    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- #
# the record of how something ran
# --------------------------------------------------------------------------- #
def cpu_name() -> str:
    """The CPU's model name and core count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def device_info() -> dict:
    """The device a run computes on: the first accelerator, else the CPU."""
    acc = accelerators()
    if not acc.count:
        return {"kind": "cpu", "name": cpu_name()}
    return {"kind": acc.kind, "name": acc.name, "count": acc.count}


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict:
    """backend, device, CPU, platform, versions and code commit: recorded with
    every run and every benchmark figure."""
    import vggcifar

    backend = name()
    versions = {"python": platform.python_version(), "keras": keras.__version__,
                "numpy": np.__version__, "vggcifar": vggcifar.__version__}
    try:
        versions[backend] = __import__(backend).__version__
    except Exception:  # informative only
        pass
    env = {"backend": backend, "backend_choice": vggcifar.BACKEND_CHOICE, "device": device_info(),
           "cpu": cpu_name(), "cpu_bfloat16": cpu_bfloat16(backend), "platform": platform.platform(),
           "versions": versions, "git_commit": _git_commit()}
    if backend == "torch":
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env
