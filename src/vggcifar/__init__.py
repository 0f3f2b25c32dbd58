"""VGG networks for CIFAR, in Keras 3.

Importing this package does no work beyond one thing: it names the package's
default Keras backend for a process that has not chosen one (``KERAS_BACKEND``
unset) and has not imported keras yet. Keras reads that variable once, at its
first import, so the default must be in place before any of our modules
import keras. Choosing it looks at two device paths and the installed
packages; nothing is imported.
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

#: Device paths an NVIDIA driver creates, and the modules of JAX's CUDA plugins.
_NVIDIA_PATHS = ("/dev/nvidia0", "/proc/driver/nvidia/gpus")
_JAX_CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin")


def _has_nvidia_gpu() -> bool:
    return any(_os.path.exists(p) for p in _NVIDIA_PATHS)


def _has_jax_cuda() -> bool:
    return any(_util.find_spec(m) is not None for m in _JAX_CUDA_PLUGINS)


def default_backend() -> tuple[str, str]:
    """(the backend this machine defaults to, why)."""
    if _has_nvidia_gpu() and _has_jax_cuda():
        return GPU_DEFAULT_BACKEND, "the default on a machine with an NVIDIA GPU and JAX's CUDA plugin"
    if _util.find_spec(DEFAULT_BACKEND) is None:  # the base install holds no backend: the one installed
        for other in ("jax", "torch"):
            if _util.find_spec(other) is not None:
                return other, f"the backend installed ({DEFAULT_BACKEND}, the default, is not)"
    if _has_nvidia_gpu():
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
