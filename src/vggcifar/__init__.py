"""VGG networks for CIFAR, in Keras 3.

Importing this package does no work beyond one thing: it names the package's
default Keras backend for a process that has not chosen one (``KERAS_BACKEND``
unset) and has not imported keras yet. Keras reads that variable once, at its
first import, so the default must be in place before any of our modules
import keras.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: Chosen by measurement (docs/performance.md, "Which backend"): on a 2-core
#: CPU, the spec network trains 1.1-1.33x faster on TensorFlow 2.21 (oneDNN)
#: than on torch 2.13 at batch 128-32 and predicts 1.5x faster (its process
#: needs ~0.4-0.7 GiB more memory: 1.77 GiB peak on 50,000 images, within the
#: 2 GiB budget); jax (XLA on CPU) is 5x slower. On a GPU, Keras compiles
#: TensorFlow's step with XLA. The backend's package is pinned in
#: pyproject.toml's dependencies; torch and jax are optional extras.
DEFAULT_BACKEND = "tensorflow"

if "keras" not in _sys.modules:
    _os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
