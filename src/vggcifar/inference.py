"""Inference with a model: loading a saved one safely, softmax outputs batch by batch, test-time augmentation.

The models a run saves take raw uint8 RGB pictures and scale them
themselves, so nothing here converts pixels to floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INFERENCE_BATCH = 256  # images per predict step; memory only, not numerics
#: Test-time augmentation: "none", or "flip": the mean softmax of each image
#: and its horizontal mirror.
TTA_MODES = ("none", "flip")


def load_model(path):
    """A ``.keras`` file, loaded with Keras' safe mode on (no code from the file runs)."""
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: only .keras model files are accepted (safe to load); "
                         "save the model with model.save('model.keras')")
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Keras' text goes on to suggest turning safe mode off: this command never does.
        first = first.split(" If you trust", 1)[0].strip()
        raise ValueError(f"{path}: cannot be loaded safely ({first})") from None


def model_input_size(model, where) -> tuple[int, int]:
    """The (height, width) of the uint8 RGB pictures ``model`` takes; a model
    that takes anything else (floats, channels first) is refused."""
    shape = tuple(model.input_shape)
    dtype = str(model.inputs[0].dtype) if getattr(model, "inputs", None) else None
    if len(shape) != 4 or shape[-1] != 3 or not all(isinstance(d, int) for d in shape[1:3]):
        raise ValueError(f"{where} takes inputs of shape {shape[1:]}; predict needs a model that takes "
                         "HxWx3 pictures, as the model.keras a run saves does")
    if dtype != "uint8":
        raise ValueError(f"{where} takes {dtype} inputs, not raw uint8 pixels: it does not scale pictures "
                         "itself; use the model.keras a run saves (built with a rescale layer)")
    return shape[1], shape[2]


def predict_probs(model, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Softmax outputs, batch by batch (the uint8 set is never copied whole)."""
    out = []
    for start in range(0, len(x), batch_size):
        out.append(np.asarray(model.predict_on_batch(x[start:start + batch_size]), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def model_probs(model, images, size=None) -> np.ndarray:
    """Softmax outputs for uint8 RGB ``images``, each first brought to the
    model's input size by ``images.to_model_input`` (the one resize that
    ``predict`` uses too; CIFAR's 32x32 arrays pass through unchanged)."""
    from vggcifar.images import INPUT_SIZE, to_model_input

    return predict_probs(model, to_model_input(images, size or INPUT_SIZE))


def predict_tta(model, x: np.ndarray, tta: str = "none") -> np.ndarray:
    """Softmax outputs of ``model`` on uint8 images ``x`` (N, H, W, C);
    ``tta="flip"`` averages them with those of the horizontal mirrors."""
    if tta not in TTA_MODES:
        raise ValueError(f"Expected `tta` in {TTA_MODES}. Received: tta={tta!r}")
    probs = model_probs(model, x)
    if tta == "flip":
        probs = (probs + model_probs(model, np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return probs
