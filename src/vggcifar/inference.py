"""Inference with a model: loading a saved one safely, softmax outputs batch by batch, test-time augmentation.

The models a run saves take raw uint8 RGB pictures and scale them
themselves, so nothing here converts pixels to floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggcifar.fsutil import first_line

INFERENCE_BATCH = 256  # images per predict step; memory only, not numerics
#: Test-time augmentation: "none", or "flip": the mean softmax of each image
#: and its horizontal mirror.
TTA_MODES = ("none", "flip")
#: What a saved model computes in here (``load_model``): "auto" is bfloat16
#: where this machine computes in it (vggcifar.backend.resolve_precision's
#: rule, as in training), else float32. The saved file is float32 either way.
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


#: The most a JSON member of a ``.keras`` file (its config and metadata) may
#: inflate to. Keras reads each whole into memory, and its own guard starts at
#: 4 GiB. A VGG-16's config is 32 KB and that of the largest model in
#: keras.applications (EfficientNetV2L, 1,031 layers) 0.96 MB: 16 MiB refuses
#: only a file made to exhaust memory.
MAX_CONFIG_BYTES = 16 * 2**20
#: Keras stores a ``.keras`` file's members uncompressed; a member over
#: MAX_CONFIG_BYTES that inflates to more than this many times its stored size
#: is a decompression bomb.
MAX_EXPANSION = 100


def _not_a_keras_zip(path, why: str) -> ValueError:
    return ValueError(f"{path}: is not a complete .keras (zip) file ({why}); copy the whole file again, "
                      "or save the model again with model.save('model.keras')")


def check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` file that is not a whole zip archive (truncated,
    or another format), whose members would inflate past what a model needs
    (checked from the zip directory alone, before any member is read), or
    whose members do not match their checksums."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            _check_member_sizes(path, archive.infolist())
            # Each member read through once in 1 MiB pieces, its checksum
            # compared: a damaged member, or one that inflates to more than
            # its directory entry says, is refused with bounded memory (Keras
            # asks zipfile for the config whole, which inflates the member's
            # compressed bytes in one piece, up to 1,000 times their size).
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _not_a_keras_zip(path, first_line(exc)) from None
    if damaged is not None:
        raise _not_a_keras_zip(path, f"its {damaged} member is damaged: its checksum does not match")


def _check_member_sizes(path: Path, members) -> None:
    for m in members:
        if m.filename.endswith(".json") and m.file_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path}: its {m.filename} member would inflate to {m.file_size:,} bytes, more than "
                             f"the {MAX_CONFIG_BYTES:,} a model's config may take (a VGG-16's is 32 KB); refused "
                             "before reading it: not a model saved by Keras, or a decompression bomb")
        if m.file_size > MAX_CONFIG_BYTES and m.file_size > MAX_EXPANSION * max(1, m.compress_size):
            raise ValueError(f"{path}: its {m.filename} member would inflate from {m.compress_size:,} to "
                             f"{m.file_size:,} bytes (Keras stores members uncompressed); refused before reading "
                             "it: a decompression bomb, not a model saved by Keras")


def check_model_path(path) -> Path:
    """``path`` as a Path, once it names a ``.keras`` file that exists (checked
    before any backend is imported: a mistyped path is refused at once)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: only .keras model files are accepted (safe to load); "
                         "save the model with model.save('model.keras')")
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    return path


def load_model(path, precision: str = "float32"):
    """A ``.keras`` file, loaded with Keras' safe mode on (no code from the
    file runs), after ``check_keras_archive``, its layers computing in
    ``precision`` (PRECISIONS; a model saved in another policy, as older runs
    saved bfloat16-trained ones, is converted)."""
    import zipfile

    path = check_model_path(path)
    if precision not in PRECISIONS:
        raise ValueError(f"Expected `precision` in {PRECISIONS}. Received: precision={precision!r}")
    check_keras_archive(path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except zipfile.BadZipFile as exc:  # a member's bytes damaged (its checksum fails)
        raise _not_a_keras_zip(path, first_line(exc)) from None
    except Exception as exc:
        first = first_line(exc)
        # Keras' text goes on to suggest turning safe mode off: this command never does.
        first = first.split(" If you trust", 1)[0].strip()
        raise ValueError(f"{path}: cannot be loaded safely ({first})") from None
    return in_precision(model, precision)


def in_precision(model, precision: str):
    """``model`` computing in ``precision`` (PRECISIONS, "auto" resolved for
    this machine): itself when it already does."""
    from vggcifar.backend import resolve_precision
    from vggcifar.model import with_dtype_policy

    return with_dtype_policy(model, resolve_precision(precision))


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


class DeviceSet:
    """A uint8 image set put on the devices once, as the inference batches
    ``predict_probs`` takes (a set predicted after every epoch is not sent
    again each time); ``np.asarray`` of it is the host's copy."""

    def __init__(self, x: np.ndarray, batch_size: int = INFERENCE_BATCH):
        from vggcifar import backend

        self.host, self.batch_size = x, batch_size
        self.batches = [backend.to_device(x[i:i + batch_size], split_axis=0) for i in range(0, len(x), batch_size)]

    def __len__(self) -> int:
        return len(self.host)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.host, dtype=dtype)


def on_device(x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> DeviceSet:
    """``x`` on the devices, ready for ``predict_probs`` (see DeviceSet)."""
    return DeviceSet(x, batch_size)


def _jax_forward(model, trainable, non_trainable, x):
    import keras

    return keras.ops.cast(model.stateless_call(trainable, non_trainable, x, training=False)[0], "float32")


def _forward(model, x):
    import keras

    return keras.ops.cast(model(x, training=False), "float32")


def _queue(model, batches) -> list:
    """The model's outputs for ``batches``, each a call of its compiled
    inference (``backend.compiled_for``), all dispatched before any is read."""
    import keras

    from vggcifar import backend

    if keras.backend.backend() == "jax":
        forward = backend.compiled_for(model, _jax_forward)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return [forward(trainable, non_trainable, b) for b in batches]
    forward = backend.compiled_for(model, _forward)
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            return [forward(b) for b in batches]
    return [forward(b) for b in batches]


def predict_probs(model, x, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Softmax outputs of ``x`` (uint8 images, or a ``DeviceSet``), batch by
    batch (the uint8 set is never copied whole); every batch is queued before
    the host waits for the first, so a GPU runs them back to back."""
    if isinstance(x, DeviceSet):
        batches = x.batches
    else:
        batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
    if not batches:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    import keras

    outputs = _queue(model, batches)
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(o), np.float32) for o in outputs])


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
