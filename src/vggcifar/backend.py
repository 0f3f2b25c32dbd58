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
import random
import subprocess
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import keras

from vggcifar import COMPILE_CACHE_ENV

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


#: What an NVIDIA GPU computes fast in, by compute capability (--precision
#: auto): bfloat16 tensor cores from Ampere (8.0: A100, RTX 30xx; H100 is 9.0);
#: float16 tensor cores only on Volta and Turing (7.x: V100, T4, RTX 20xx),
#: trained with Keras' loss scaling; older GPUs, float32.
BFLOAT16_FROM = (8, 0)
FLOAT16_FROM = (7, 0)
#: From Ampere on, the backends run "float32" matmuls and convolutions in TF32
#: (10-bit mantissa) by default: JAX's and TensorFlow's dots and convolutions,
#: torch's convolutions. Set this variable to 1 for full float32 (slower).
STRICT_FLOAT32_ENV = "VGGCIFAR_STRICT_FLOAT32"


@dataclass(frozen=True)
class Accelerators:
    """What a backend sees besides the CPU: none (count 0), or its GPUs."""

    kind: str = "cpu"  # "cpu", "gpu" (or JAX's platform name)
    name: str = ""
    count: int = 0
    bfloat16: bool = False  # computes in bfloat16 natively (tensor cores from compute capability 8.0)
    compute_capability: tuple[int, int] | None = None  # an NVIDIA GPU's, where the backend says it

    def precision(self) -> str:
        """The mixed precision these accelerators train fastest in (BFLOAT16_FROM, FLOAT16_FROM)."""
        cc = self.compute_capability
        if cc is None:
            return "mixed_bfloat16" if self.bfloat16 else "float32"
        if cc >= BFLOAT16_FROM:
            return "mixed_bfloat16"
        return "mixed_float16" if cc >= FLOAT16_FROM else "float32"

    @property
    def tf32(self) -> bool:
        """Whether float32 matmuls and convolutions run in TF32 here by default."""
        return self.compute_capability is not None and self.compute_capability >= BFLOAT16_FROM


def _capability(text) -> tuple[int, int] | None:
    """A compute capability from its text ("8.6") or a pair; None if unreadable."""
    try:
        major, minor = (str(text).split(".") + ["0"])[:2] if not isinstance(text, tuple) else text
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


@functools.cache
def accelerators(backend: str | None = None) -> Accelerators:
    """The accelerators ``backend`` (default: the current one) can use; asked
    once per process. Discovery failing means none."""
    backend = backend or name()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                cc = tuple(torch.cuda.get_device_capability(0))
                return Accelerators("gpu", torch.cuda.get_device_name(0), torch.cuda.device_count(),
                                    cc >= BFLOAT16_FROM, cc)
        elif backend == "jax":
            import jax

            devs = jax.devices()
            if devs and devs[0].platform != "cpu":
                cc = _capability(getattr(devs[0], "compute_capability", None))
                return Accelerators(devs[0].platform, devs[0].device_kind, len(devs),
                                    cc is not None and cc >= BFLOAT16_FROM, cc)
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                cc = _capability(tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability",
                                                                                            ())) or None)
                return Accelerators("gpu", gpus[0].name, len(gpus), cc is not None and cc >= BFLOAT16_FROM, cc)
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
    """"auto": the mixed precision the device computes fast in: on a GPU, by
    what its tensor cores take (``Accelerators.precision``: bfloat16 from
    compute capability 8.0, float16 with loss scaling on 7.x, else float32);
    with no accelerator, bfloat16 on a CPU with bfloat16 units this backend
    uses, else float32."""
    if precision != "auto":
        return precision
    acc = accelerators()
    if acc.count:
        return acc.precision()
    return "mixed_bfloat16" if cpu_bfloat16() is not None else "float32"


def strict_float32() -> bool:
    """Whether the user asked for full float32 matmuls and convolutions (STRICT_FLOAT32_ENV)."""
    return os.environ.get(STRICT_FLOAT32_ENV, "").strip() not in ("", "0")


def tf32() -> bool:
    """Whether this process's float32 matmuls and convolutions run in TF32."""
    return accelerators().tf32 and not strict_float32()


def use_strict_float32() -> bool:
    """With STRICT_FLOAT32_ENV set: make the backend compute float32 matmuls
    and convolutions in full float32 (no TF32). Returns whether it did."""
    if not strict_float32():
        return False
    backend = name()
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return True


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


# --------------------------------------------------------------------------- #
# arrays on the devices, small compiled functions, seeds, the compile cache
# --------------------------------------------------------------------------- #
def _distribution():
    """The keras.distribution in force (JAX only), or None."""
    return keras.distribution.distribution() if name() in DISTRIBUTED_BACKENDS else None


def replicated_sharding():
    """Under a keras.distribution (JAX): the sharding of an array held whole
    on every device of its mesh; None otherwise."""
    dist = _distribution()
    return None if dist is None else keras.distribution.TensorLayout([], dist.device_mesh).backend_layout


def batch_sharding(ndim: int):
    """Under a keras.distribution (JAX): the sharding that splits an array of
    ``ndim`` axes along its first among the devices, as the distribution's data
    layout splits a batch; None otherwise."""
    dist = _distribution()
    return None if dist is None else dist.get_data_layout((1,) * ndim).backend_layout


def to_device(array: np.ndarray, *, split_axis: int | None = None):
    """``array`` as a tensor on the devices a run computes on, sent from the
    host once: on one device, there; under a keras.distribution (JAX), whole on
    every device, or with ``split_axis`` split along that axis among them (when
    it splits evenly; whole on each otherwise). Under several processes each
    one supplies its own devices' pieces from its full copy, so every process
    calls this with the same array."""
    array = np.asarray(array)
    dist = _distribution()
    if dist is None:
        if name() == "jax":
            import jax

            return jax.device_put(array)
        return keras.ops.convert_to_tensor(array)
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = replicated_sharding().mesh
    spec = [None] * array.ndim
    if split_axis is not None and array.shape[split_axis] % mesh.devices.size == 0:
        spec[split_axis] = batch_sharding(1).spec[0]
    sharding = NamedSharding(mesh, PartitionSpec(*spec))
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def compiled(fn):
    """``fn``, a function of tensors, as one compiled program of the backend
    (``jax.jit``, ``tf.function``; torch runs it as written): called, it is
    dispatched once, with no transfer for its constants and no wait per op.
    Under a keras.distribution its results are whole on every device (small
    results, for the host to read)."""
    backend = name()
    if backend == "jax":
        import jax

        return jax.jit(fn, out_shardings=replicated_sharding())
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    return fn


#: compiled_for's functions, per object, for as long as the object lives.
_COMPILED_FOR: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled_for(obj, fn):
    """``lambda *args: fn(obj, *args)`` compiled (``compiled``) once for
    ``obj`` (a model, an optimizer) and the devices in force, and kept while
    ``obj`` lives: the function holds only a weak reference to it."""
    key = (fn, replicated_sharding())
    per_object = _COMPILED_FOR.setdefault(obj, {})
    if key not in per_object:
        ref = weakref.ref(obj)
        per_object[key] = compiled(lambda *args: fn(ref(), *args))
    return per_object[key]


def _finite_flags(values):
    return keras.ops.stack([keras.ops.all(keras.ops.isfinite(v)) for v in values])


@functools.cache
def _compiled_finite_flags(backend: str, sharding):
    return compiled(_finite_flags)


def finite_flags(values) -> np.ndarray:
    """For each float tensor of ``values``, whether it holds only finite
    numbers: one compiled reduction over all of them, read back once."""
    values = list(values)
    if not values:
        return np.zeros(0, bool)
    flags = _compiled_finite_flags(name(), replicated_sharding())(values)
    return np.asarray(keras.ops.convert_to_numpy(flags), bool)


def set_random_seed(seed: int) -> None:
    """Seed Python's and NumPy's generators and Keras' global seed (its
    ``SeedGenerator`` and, on torch, torch's), as ``keras.utils.set_random_seed``
    does, but without importing TensorFlow in a JAX or torch process: Keras'
    own seeds TensorFlow wherever it is installed, which imports it (seconds,
    and a second runtime beside JAX's or torch's on a GPU)."""
    if not isinstance(seed, int):
        raise ValueError(f"Expected `seed` argument to be an integer. Received: seed={seed!r}")
    if name() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    # Keras' backend-neutral pieces of set_random_seed (keras/src/utils/rng_utils.py).
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if name() == "torch":
        import torch

        torch.manual_seed(seed)


#: Programs that compile faster than this are not worth a file (JAX's default is 1 s;
#: a full-size VGG step takes seconds to compile on a GPU, tens on a CPU).
COMPILE_CACHE_MIN_SECONDS = 0.2


def use_compile_cache() -> str | None:
    """On JAX: keep compiled programs on disk (``vggcifar.COMPILE_CACHE_ENV``) so that a
    resumed or repeated run loads its step instead of compiling it again.
    JAX decides once per process, at its first compilation, so this runs before
    anything is built. Returns the folder, or None (another backend, switched
    off, or a folder JAX was already given, e.g. by $JAX_COMPILATION_CACHE_DIR).
    The folder only grows; deleting it at any time costs compilations only."""
    if name() != "jax":
        return None
    import jax

    setting = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if setting == "0":
        return None
    if not setting and jax.config.jax_compilation_cache_dir:
        return None  # the user's own choice
    from vggcifar.cifarfiles import keras_cache_dir

    path = setting or str(keras_cache_dir().parent / "jax-cache")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)
    return path


def keep_tensorflow_out() -> None:
    """In a JAX or torch process that has not imported TensorFlow: tell Keras
    it is absent. Keras imports it wherever it is installed to ask whether an
    object is one of its types (saving a model's config asks for every value),
    though no TensorFlow object can exist in a process that never imported it."""
    import sys

    if name() == "tensorflow" or "tensorflow" in sys.modules:
        return
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False


def configure_process() -> None:
    """What a run sets for its whole process before it builds anything: JAX's
    compile cache (``use_compile_cache``), no TensorFlow beside another
    backend (``keep_tensorflow_out``), full float32 when asked
    (``use_strict_float32``). Calling it again changes nothing."""
    use_compile_cache()
    keep_tensorflow_out()
    use_strict_float32()


def describe() -> str:
    """One line: the backend, how it was chosen, and the device it trains on."""
    import vggcifar

    dev = device_info()
    line = f"backend: {name()} ({vggcifar.BACKEND_CHOICE}), on {dev['name']} ({dev['kind']})"
    if tf32():
        line += f"; float32 matmuls and convolutions in TF32 ({STRICT_FLOAT32_ENV}=1 for full float32)"
    return line


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
    info = {"kind": acc.kind, "name": acc.name, "count": acc.count}
    if acc.compute_capability is not None:
        info["compute_capability"] = ".".join(map(str, acc.compute_capability))
    return info


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
           # What float32 matmuls and convolutions compute in (TF32 by default from Ampere on).
           "float32_matmul": "tf32" if tf32() else "float32",
           "versions": versions, "git_commit": _git_commit()}
    if backend == "torch":
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env
