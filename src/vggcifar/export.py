"""Export a saved model for other runtimes (ONNX, LiteRT/TFLite, TensorFlow SavedModel) through Keras' own ``model.export``, each artifact checked in its own runtime before it is kept.

The artifact is the float32 network of ``model.keras`` with its pixel scaling
inside: it takes what the ``.keras`` file takes, pixels 0-255 of shape
(N, 32, 32, 3), as uint8 (or float32 with ``input_dtype="float32"``), and
returns softmax probabilities (N, classes). Which backend can write which
format, and what it needs installed, is ``NEEDS``; a model that cannot be
exported here is refused with the reason and the fix in one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggcifar import fsutil


@dataclass(frozen=True)
class Format:
    keras_name: str  # model.export's format=
    what: str  # in messages
    suffix: str  # the file name's ending; "" for a folder
    runtime: str  # what the artifact is checked in, in messages
    modules: tuple[str, ...]  # any of these runs it (run_artifact)


FORMATS = {
    "onnx": Format("onnx", "ONNX", ".onnx", "onnxruntime", ("onnxruntime",)),
    "tflite": Format("litert", "LiteRT (TFLite)", ".tflite", "the LiteRT interpreter",
                     ("ai_edge_litert", "tensorflow")),  # tf.lite's interpreter where LiteRT's package is missing
    "saved_model": Format("tf_saved_model", "TensorFlow SavedModel", "", "tf.saved_model", ("tensorflow",)),
}
#: The pip extra that installs the converters and runtimes of the TensorFlow backend.
EXPORT_EXTRA = "pip install -e '.[export]'"
#: What each format needs on each Keras backend (keras/src/export): the module
#: model.export imports, and how to install it; a backend missing from a
#: format's row cannot write it.
NEEDS: dict[str, dict[str, tuple[str, str] | None]] = {
    "onnx": {"tensorflow": ("tf2onnx", EXPORT_EXTRA), "jax": ("jax2onnx", "pip install jax2onnx"),
             "torch": ("onnxscript", "pip install onnx onnxscript")},
    "tflite": {"tensorflow": None, "torch": ("litert_torch", "pip install litert-torch")},
    "saved_model": {"tensorflow": None, "jax": ("tensorflow", "pip install -e '.[tensorflow]'")},
}
#: Pictures the artifact and the Keras model are compared on, and what they
#: must agree to: the same most probable class, probabilities within TOLERANCE.
CHECK_IMAGES = 16
TOLERANCE = 1e-3
INPUT_DTYPES = ("uint8", "float32")


@dataclass(frozen=True)
class Exported:
    """What ``export_model`` wrote and how its check went."""

    path: Path
    format: str
    bytes: int
    input_dtype: str
    checked: int  # pictures run in the artifact's runtime (0: not checked)
    max_difference: float | None
    not_checked: str | None  # why, when not checked


def check_exportable(fmt: str, backend: str) -> None:
    """Raise ValueError, with the fix, when ``backend`` cannot write ``fmt`` in this installation."""
    if fmt not in FORMATS:
        raise ValueError(f"Expected `format` in {tuple(FORMATS)}. Received: format={fmt!r}")
    what = FORMATS[fmt].what
    if backend not in NEEDS[fmt]:
        able = " or ".join(NEEDS[fmt])
        raise ValueError(f"Keras exports {what} from the {able} backend, not {backend}: "
                         f"run the command again with KERAS_BACKEND={next(iter(NEEDS[fmt]))}")
    need = NEEDS[fmt][backend]
    if need is not None and importlib.util.find_spec(need[0]) is None:
        raise ValueError(f"Keras exports {what} from the {backend} backend through {need[0]}, which is not "
                         f"installed: {need[1]}")


def output_path(fmt: str, output) -> Path:
    """``output`` checked for ``fmt``: a file name with the format's ending, or a folder."""
    output = Path(output)
    suffix = FORMATS[fmt].suffix
    if suffix and output.suffix != suffix:
        raise ValueError(f"{output}: {FORMATS[fmt].what} model files end in {suffix}; "
                         f"pass --output {output.with_suffix(suffix).name}")
    if not suffix and output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file; a {FORMATS[fmt].what} is a folder: pass a folder's name")
    if suffix and output.is_dir():
        raise ValueError(f"{output} is a folder; pass a file name ending in {suffix}")
    return output


def check_pictures(model, count: int = CHECK_IMAGES) -> np.ndarray:
    """Pictures to compare an artifact with its model on: the synthetic test
    set's (shapes a trained model tells apart) at CIFAR's size, else noise."""
    from vggcifar.data import load_synthetic

    shape = tuple(model.inputs[0].shape[1:])
    if shape == (32, 32, 3):
        return load_synthetic(1, count, seed=11).x_test
    return np.random.default_rng(11).integers(0, 256, (count, *shape), dtype=np.uint8)


def run_artifact(path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The probabilities an exported artifact gives ``x`` in its own runtime:
    onnxruntime, the LiteRT interpreter (TensorFlow's tf.lite where LiteRT's
    own package is missing), tf.saved_model."""
    path = str(path)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])
    if fmt == "tflite":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        interpreter = Interpreter(model_path=path)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # held: serve() reads its variables
        return np.asarray(loaded.serve(x))
    raise ValueError(f"Expected `format` in {tuple(FORMATS)}. Received: format={fmt!r}")


def runtime_missing(fmt: str) -> str | None:
    """Why an artifact of ``fmt`` cannot be run here (its runtime is not installed), or None."""
    modules = FORMATS[fmt].modules
    if any(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return f"{modules[0]} is not installed ({EXPORT_EXTRA})"


def compare(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest probability difference; ValueError when the two disagree
    on a picture's class or by TOLERANCE or more."""
    if got.shape != expected.shape:
        raise ValueError(f"the artifact answers with shape {got.shape}, the model with {expected.shape}")
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    differ = int((got.argmax(1) != expected.argmax(1)).sum())
    if differ or not diff < TOLERANCE:
        raise ValueError(f"the artifact disagrees with the Keras model on {len(got)} pictures: {differ} most probable "
                         f"classes differ, probabilities by up to {diff:.2g} (at most {TOLERANCE:g} allowed)")
    return diff


def export_model(target, fmt: str, output, *, input_dtype: str = "uint8", check: bool = True) -> Exported:
    """Export ``target`` (a run folder or a ``.keras`` file) to ``output`` in
    ``fmt`` (FORMATS), in float32, taking ``input_dtype`` pixels 0-255.

    The artifact is written beside ``output`` under a temporary name, run in
    its runtime on CHECK_IMAGES pictures against the Keras model (``check``;
    skipped, and said so, when the runtime is not installed), and only then
    renamed to ``output``. Raises ValueError with the reason in one line."""
    from vggcifar.inference import check_model_path, load_model, predict_probs
    from vggcifar.rundir import model_file

    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"Expected `input_dtype` in {INPUT_DTYPES}. Received: input_dtype={input_dtype!r}")
    source = check_model_path(model_file(target))  # before the backend is imported
    from vggcifar import backend
    from vggcifar.model import with_dtype_policy

    check_exportable(fmt, backend.name())
    output = output_path(fmt, output)
    model = with_dtype_policy(load_model(source, "float32"), "float32", input_dtype=input_dtype)
    # Called once in any case: Keras' ONNX export refuses a model never called.
    x = check_pictures(model).astype(input_dtype)
    expected = np.asarray(predict_probs(model, x), np.float64)
    not_checked = runtime_missing(fmt) if check else "not asked"
    diff = None
    spec = FORMATS[fmt]
    place = fsutil.atomic_path(output, suffix=spec.suffix) if spec.suffix else fsutil.atomic_dir(output)
    with place as tmp:
        if not spec.suffix:
            tmp.rmdir()  # model.export makes the folder
        try:
            with _quiet_converters():
                model.export(str(tmp), format=spec.keras_name, verbose=False)
        except Exception as exc:
            raise ValueError(f"{source} cannot be exported to {spec.what} on the {backend.name()} backend: "
                             f"{fsutil.first_line(exc)}") from None
        if not_checked is None:
            try:
                with _quiet_converters():
                    got = run_artifact(tmp, fmt, x)
                diff = compare(expected, got)
            except Exception as exc:
                raise ValueError(f"{source} exported to {spec.what} is not kept: in {spec.runtime}, "
                                 f"{fsutil.first_line(exc)}") from None
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) if output.is_dir() else output.stat().st_size
    return Exported(output, fmt, size, input_dtype, 0 if diff is None else len(x), diff, not_checked)


@contextlib.contextmanager
def _quiet_converters():
    """tf2onnx logs each step of its conversion at INFO, Keras' patch of it
    warns about NumPy 2, and TensorFlow (through absl) that a SavedModel
    converted from JAX has no gradients: none of it is for the user."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("tf2onnx", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
