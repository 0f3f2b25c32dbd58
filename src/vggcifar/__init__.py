"""VGG networks for CIFAR, in Keras 3.

Importing this package does no work beyond one thing: it names the package's
default Keras backend for a process that has not chosen one (``KERAS_BACKEND``
unset) and has not imported keras yet. Keras reads that variable once, at its
first import, so the default must be in place before any of our modules
import keras. Choosing it looks at two device paths and the installed
packages; only where both promise a GPU for JAX does it ask the NVIDIA
driver's library (through ctypes, well under a second) whether JAX can use
one. Nothing is imported.
"""

import importlib.util as _util
import os as _os
import sys as _sys

__version__ = "0.1.0"

#: On a CPU, chosen by measurement (docs/performance.md, "Which backend"): on a
#: 2-core CPU the spec network trains 1.1-1.33x faster on TensorFlow 2.21
#: (oneDNN) than on torch 2.13 at batch 128-32 and predicts 1.5x faster; jax
#: (XLA on CPU) is 5x slower. Pinned in pyproject.toml's dependencies.
DEFAULT_BACKEND = "tensorflow"

#: On a machine with an NVIDIA GPU and JAX's CUDA plugin (the `gpu` extra):
#: XLA-compiled steps, K of them in one call (vggcifar.steps), and the engine
#: keras.distribution runs on; keras.io's backend benchmarks put JAX level with
#: TensorFlow and 2-4x ahead of torch in training (docs/performance.md, "GPUs").
GPU_DEFAULT_BACKEND = "jax"

#: JAX's compiled programs are kept on disk between processes (a resumed run,
#: a second run of the same shapes, the parts of a benchmark): in the folder this
#: variable names, "0" for none; unset, ``jax-cache/`` in the Keras folder
#: ($KERAS_HOME, else ~/.keras). Named here, where a process can read it
#: without importing keras (vggcifar.backend.use_compile_cache acts on it).
COMPILE_CACHE_ENV = "VGGCIFAR_JAX_CACHE"

#: Device paths an NVIDIA driver creates.
_NVIDIA_PATHS = ("/dev/nvidia0", "/proc/driver/nvidia/gpus")
#: JAX's CUDA plugins, first preferred, with what each needs: the CUDA version
#: the driver supports (as cuDriverGetVersion gives it, 1000 x major + 10 x
#: minor) and the oldest GPU its CUDA builds for (compute capability: CUDA 13
#: dropped Maxwell, Pascal and Volta; JAX's CUDA 12 wheels start at Maxwell's 5.2).
_JAX_CUDA_PLUGINS = {"jax_cuda13_plugin": (13000, (7, 5)), "jax_cuda12_plugin": (12000, (5, 2))}
#: cuDeviceGetAttribute's numbers for the compute capability's major and minor parts.
_CC_MAJOR, _CC_MINOR = 75, 76


def _has_nvidia_gpu() -> bool:
    return any(_os.path.exists(p) for p in _NVIDIA_PATHS)


def _jax_cuda_plugin() -> str | None:
    """The JAX CUDA plugin installed (the newest CUDA first), or None."""
    return next((m for m in _JAX_CUDA_PLUGINS if _util.find_spec(m) is not None), None)


def _has_jax_cuda() -> bool:
    return _jax_cuda_plugin() is not None


def _cuda_probe():
    """(the CUDA version the driver supports, GPUs visible, the first one's
    compute capability), asked of the driver's own library; or, as a string,
    why no GPU can be used."""
    import ctypes

    visible = _os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"no GPU is visible (CUDA_VISIBLE_DEVICES={visible!r})"
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "the NVIDIA driver's library (libcuda.so.1) cannot be loaded"
    version, count, device, major, minor = (ctypes.c_int(0) for _ in range(5))
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return "the NVIDIA driver does not say which CUDA it supports"
    status = cuda.cuInit(0)
    if status != 0:
        return f"CUDA cannot start (cuInit returned error {status})"
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "CUDA sees no GPU"
    if (cuda.cuDeviceGet(ctypes.byref(device), 0) != 0
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device) != 0
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device) != 0):
        return "CUDA does not say what the GPU is"
    return version.value, count.value, (major.value, minor.value)


def jax_gpu_problem() -> str | None:
    """Why JAX's CUDA plugin cannot use this machine's GPU, or None when it can."""
    plugin = _jax_cuda_plugin() or next(iter(_JAX_CUDA_PLUGINS))
    needs_cuda, oldest = _JAX_CUDA_PLUGINS[plugin]
    found = _cuda_probe()
    if isinstance(found, str):
        return found
    version, _, capability = found
    other = " or pip install -e '.[gpu-cuda12]'" if plugin == "jax_cuda13_plugin" else ""
    if version < needs_cuda:
        return (f"the NVIDIA driver supports CUDA {version // 1000}.{version % 1000 // 10}, {plugin} needs "
                f"{needs_cuda // 1000}: update the driver{other}")
    if capability < oldest:
        return (f"the GPU's compute capability {capability[0]}.{capability[1]} is older than {plugin} supports "
                f"({oldest[0]}.{oldest[1]}){other.replace(' or', ':')}")
    return None


def default_backend() -> tuple[str, str]:
    """(the backend this machine defaults to, why)."""
    gpu = _has_nvidia_gpu()
    jax_gpu = gpu and _has_jax_cuda()
    # Why this machine's GPU goes unused, where JAX's CUDA plugin is there to use it.
    unused = jax_gpu_problem() if jax_gpu else None
    if jax_gpu and unused is None:
        return GPU_DEFAULT_BACKEND, "the default on a machine with an NVIDIA GPU and JAX's CUDA plugin"
    on_cpu = f"on the CPU: JAX's CUDA plugin is installed but {unused}" if unused else None
    if _util.find_spec(DEFAULT_BACKEND) is None:  # the base install holds no backend: the one installed
        for other in ("jax", "torch"):
            if _util.find_spec(other) is not None:
                why = f"the backend installed ({DEFAULT_BACKEND}, the default, is not)"
                return other, f"{why}, {on_cpu}" if on_cpu else why
    if on_cpu:
        return DEFAULT_BACKEND, f"the default {on_cpu}"
    if gpu:
        return DEFAULT_BACKEND, "the default (an NVIDIA GPU, but no JAX CUDA plugin: pip install -e '.[gpu]')"
    return DEFAULT_BACKEND, "the default on a machine without an NVIDIA GPU"


#: How this process's backend was chosen: said in the log, kept in environment.json.
BACKEND_CHOICE = "KERAS_BACKEND set by the user"
if "keras" not in _sys.modules and not _os.environ.get("KERAS_BACKEND"):
    _os.environ["KERAS_BACKEND"], BACKEND_CHOICE = default_backend()
elif "keras" in _sys.modules:
    BACKEND_CHOICE = "keras was imported first"

#: The library's functions (vggcifar.api), loaded on first use: importing the
#: package stays free of Keras.
__all__ = ["build_model", "train", "experiment", "evaluate", "predict", "load_data", "Run", "Results"]


def __getattr__(name: str):
    if name in __all__:
        from vggcifar import api

        return getattr(api, name)
    raise AttributeError(f"module 'vggcifar' has no attribute {name!r}")
