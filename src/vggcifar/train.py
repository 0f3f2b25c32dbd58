"""Training: the model, the optimizer, the loop, and checkpoints to resume from.

The loop owns its shuffle (a permutation drawn from the seed and the epoch), so
a run resumed from any checkpoint, mid-epoch included, passes through the same
batches as an uninterrupted one; on CPU the final weights are bit-identical.
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import keras

from vggcifar import fsutil
from vggcifar.config import TrainConfig, effective_val_split
from vggcifar.data import CifarData
from vggcifar.metrics import MODE_CHECK_IMAGES, cross_entropy, mode_mismatch
from vggcifar.model import build_vgg
from vggcifar.report import hms, mismatch_message

INFERENCE_BATCH = 256  # images per predict step; memory only, not numerics
KEEP_CHECKPOINTS = 2  # the newest and the one before it, in case the newest is damaged


class TrainingStopped(Exception):
    """Training ended early; ``reason`` says why and ``status`` is for the CLI."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --------------------------------------------------------------------------- #
# model and optimizer
# --------------------------------------------------------------------------- #
def augmentation_layers(config: TrainConfig, seed: int) -> list:
    """Keras preprocessing layers: active in training, identity at inference."""
    out = []
    if "crop" in config.augment:
        # Pad 4 then crop 32x32 == shift by up to 4 px with zero fill.
        out.append(keras.layers.RandomTranslation(
            4 / 32, 4 / 32, fill_mode="constant", interpolation="nearest", seed=seed, name="aug_crop"))
    if "flip" in config.augment:
        out.append(keras.layers.RandomFlip("horizontal", seed=seed + 1, name="aug_flip"))
    if "cutout" in config.augment:
        out.append(keras.layers.RandomErasing(
            factor=1.0, scale=(0.0625, 0.0625), value=0, seed=seed + 2, name="aug_cutout"))
    return out


#: The conv layout each backend trains faster in, measured on the spec network
#: (docs/performance.md): torch's oneDNN convolutions run channels-first
#: 1.07-1.10x faster; TensorFlow's CPU kernels want channels-last (channels-first
#: 0.94x); JAX: no clear difference, its native layout kept.
DATA_FORMATS_BY_BACKEND = {"torch": "channels_first", "tensorflow": "channels_last", "jax": "channels_last"}


def resolve_data_format(data_format: str, backend: str | None = None) -> str:
    """The layout a config's ``data_format`` means on ``backend`` (default: the current one)."""
    if data_format != "auto":
        return data_format
    return DATA_FORMATS_BY_BACKEND.get(backend or keras.backend.backend(), "channels_last")


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """The network a run trains and saves: it takes raw uint8 images,
    channels-last, whatever layout it computes in."""
    return build_vgg(
        config.model,
        num_classes=num_classes,
        data_format=resolve_data_format(config.data_format),
        batch_norm=config.batch_norm,
        bn_momentum=config.bn_momentum,
        padding=config.padding,
        dense_units=config.dense_units,
        width=config.width,
        dropout=config.dropout,
        kernel_initializer=config.kernel_initializer,
        dense_initializer=config.dense_initializer,
        rescale=1.0 / 255,
        input_layout="channels_last",
        seed=config.seed,
    )


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "inverse_time":
        # Old Keras SGD(decay=d): lr_t = lr / (1 + d * t), t = iterations so far.
        return keras.optimizers.schedules.InverseTimeDecay(config.lr, decay_steps=1, decay_rate=config.decay)
    if config.schedule == "constant":
        return config.lr
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total // 5)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.lr,
        decay_steps=max(1, total - warmup),
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate=make_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay or None,
    )


def resolve_precision(precision: str) -> str:
    """"auto": bfloat16 mixed precision on a GPU that computes in it, else float32."""
    if precision != "auto":
        return precision
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
                return "mixed_bfloat16"
        elif backend == "jax":
            import jax

            if jax.devices()[0].platform == "gpu":
                return "mixed_bfloat16"
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            # bfloat16 tensor cores from compute capability 8.0 (Ampere) on.
            if gpus and tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0,)) >= (8, 0):
                return "mixed_bfloat16"
    except Exception:  # no usable accelerator: stay in float32
        pass
    return "float32"


def set_precision(precision: str) -> str:
    precision = resolve_precision(precision)
    keras.config.set_dtype_policy(precision)
    return precision


def build_training(config: TrainConfig, num_classes: int, steps_per_epoch: int):
    """(model, train_model): the saved network, and it behind augmentation,
    compiled with the config's optimizer and loss."""
    precision = set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, num_classes)
    aug = augmentation_layers(config, config.seed)
    if aug:
        inputs = keras.Input(shape=(32, 32, 3), dtype="uint8", name="image")
        x = inputs
        for layer in aug:
            x = layer(x)
        train_model = keras.Model(inputs, model(x), name="train_" + model.name)
    else:
        train_model = model
    optimizer = make_optimizer(config, steps_per_epoch)
    if precision == "mixed_float16":  # float16 gradients underflow without scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    train_model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    optimizer.build(train_model.trainable_variables)
    return model, train_model


def current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


# --------------------------------------------------------------------------- #
# devices
# --------------------------------------------------------------------------- #
#: The backends on which keras.distribution trains data-parallel.
DISTRIBUTED_BACKENDS = ("jax",)


def visible_devices(backend: str | None = None) -> list[str]:
    """The accelerators (else CPUs) the backend trains on, across all hosts."""
    backend = backend or keras.backend.backend()
    if backend in DISTRIBUTED_BACKENDS:
        return list(keras.distribution.list_devices())
    count = 1
    try:
        if backend == "torch":
            import torch

            count = torch.cuda.device_count() or 1
        elif backend == "tensorflow":
            import tensorflow as tf

            count = len(tf.config.list_physical_devices("GPU")) or 1
    except Exception:  # device discovery failed: one device, the default
        pass
    return [f"device:{i}" for i in range(count)]


def resolve_devices(devices: int | str, batch_size: int, backend: str | None = None) -> list[str]:
    """The devices a config's ``devices`` ("all" or a count) means here.

    Raises ValueError, naming the fix, when the backend cannot train on more
    than one device, when fewer are visible, or when the batch does not split
    evenly among them.
    """
    backend = backend or keras.backend.backend()
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
def _process_slot() -> tuple[int, int]:
    """(process count, this process's index): (1, 0) but under a multi-host
    keras.distribution (JAX). Fixed for the life of the process, so looked up once."""
    if keras.backend.backend() not in DISTRIBUTED_BACKENDS:
        return 1, 0
    import jax

    return jax.process_count(), jax.process_index()


def process_rows(idx: np.ndarray) -> np.ndarray:
    """This process's share of a global batch's rows. With one process (one
    host) that is every row; with several (keras.distribution.initialize), each
    feeds one contiguous slice and JAX assembles the global batch from them."""
    count, index = _process_slot()
    return idx if count == 1 else np.array_split(idx, count)[index]


def usable_images(n: int, batch_size: int, devices: int) -> int:
    """Images an epoch trains on: all but the remainder of a short last batch
    that does not split among the devices (at most devices - 1 images, different
    ones each epoch, as the shuffle moves them)."""
    return n - (n % batch_size) % devices


# --------------------------------------------------------------------------- #
# batches
# --------------------------------------------------------------------------- #
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of one epoch: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def batch_indices(perm: np.ndarray, step: int, batch_size: int) -> np.ndarray:
    """Rows of step ``step`` of an epoch shuffled by ``perm``, sorted so that
    the gather from the uint8 set reads memory in order (the batch is the same
    set of images, and the step's mean loss does not depend on their order)."""
    return np.sort(perm[step * batch_size:(step + 1) * batch_size])


def train_batch(train_model: keras.Model, x: np.ndarray, y: np.ndarray, idx: np.ndarray,
                num_classes: int) -> dict:
    """One optimizer step on images ``x[idx]``: the training path's only step.

    The batch is gathered as uint8 (3 KiB an image, nothing else is copied);
    the model scales it to float32 itself. Returns the step's logs as floats
    (reading them waits for the step to finish, on any device).
    """
    # Under a keras.distribution (JAX), train_on_batch itself places the batch
    # with the distribution's data layout (sharded along the batch axis); each
    # process hands it only its own rows.
    rows = process_rows(idx)
    logs = train_model.train_on_batch(x[rows], one_hot(y[rows], num_classes), return_dict=True)
    return {k: float(v) for k, v in logs.items()}


def predict_probs(model: keras.Model, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Softmax outputs, batch by batch (the uint8 set is never copied whole)."""
    out = []
    for start in range(0, len(x), batch_size):
        out.append(np.asarray(model.predict_on_batch(x[start:start + batch_size]), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


# --------------------------------------------------------------------------- #
# state and checkpoints
# --------------------------------------------------------------------------- #
@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps of the current epoch completed
    global_step: int = 0
    train_seconds: float = 0.0  # training steps only; evaluation excluded
    epoch_seconds: float = 0.0  # of the current epoch so far
    loss_sum: float = 0.0  # over the current epoch's images so far
    correct_sum: float = 0.0
    seen: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _all_variables(train_model, optimizer) -> list:
    return list(train_model.variables) + list(optimizer.variables)


def nonfinite_variables(variables) -> list[str]:
    """Paths of the float variables that hold a NaN or an infinity (checked
    on the device: one scalar per variable crosses to the host)."""
    bad = []
    for v in variables:
        if "float" in str(v.dtype) and not bool(keras.ops.all(keras.ops.isfinite(v.value))):
            bad.append(v.path)
    return bad


def save_checkpoint(run_dir: Path, train_model, state: TrainState) -> Path:
    """Weights, optimizer and RNG state, and the loop's state, as one folder
    that appears complete or not at all."""
    ckpt_root = Path(run_dir) / "checkpoints"
    name = f"ckpt-{state.global_step:09d}"
    target = ckpt_root / name
    variables = _all_variables(train_model, train_model.optimizer)
    with fsutil.atomic_dir(target) as tmp:
        arrays = {f"v{i:04d}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(variables)}
        with open(tmp / "variables.npz", "wb") as f:
            np.savez(f, **arrays)
        fsutil.write_json(tmp / "state.json", {**state.to_dict(), "variables": len(variables)})
    for old in list_checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(run_dir) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))


def load_checkpoint(run_dir, train_model, warn=print) -> TrainState | None:
    """Restore the newest checkpoint that loads whole; a damaged one is
    skipped for the one before it. None when there is none."""
    fsutil.remove_stale_temps(Path(run_dir) / "checkpoints")
    variables = _all_variables(train_model, train_model.optimizer)
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            meta = fsutil.read_json(ckpt / "state.json")
            with np.load(ckpt / "variables.npz") as z:
                arrays = [z[f"v{i:04d}"] for i in range(len(variables))]
            if meta.get("variables") != len(variables) or any(
                tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)
            ):
                raise ValueError("its variables do not match this run's model")
        except Exception as exc:  # damaged in any way: try the previous one
            warn(f"warning: checkpoint {ckpt} is unusable ({exc}); trying an older one")
            continue
        for v, a in zip(variables, arrays):
            v.assign(a)
        meta.pop("variables")
        return TrainState(**meta)
    return None


# --------------------------------------------------------------------------- #
# the loop
# --------------------------------------------------------------------------- #
class _StopSignals:
    """Ctrl-C and SIGTERM set a flag; the loop saves and stops at the next step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class EpochEnd:
    """What the loop hands its caller after each epoch."""
    epoch: int
    model: keras.Model
    state: TrainState
    val_probs: np.ndarray | None  # softmax outputs on the validation set


def fit(
    config: TrainConfig,
    data: CifarData,
    run_dir,
    *,
    resume: bool = False,
    on_epoch_end=None,
    log=print,
    verbose: int = 1,
    max_steps: int | None = None,
):
    """Train ``config`` on ``data`` in ``run_dir``; returns (model, state).

    ``on_epoch_end(EpochEnd)`` runs after every epoch, before its checkpoint:
    a checkpoint at an epoch's end exists only once that epoch's files are
    written, so a run killed while writing them redoes them when resumed.
    No checkpoint and no epoch end ever sees non-finite weights: training
    stops first (status 3), keeping the last good checkpoint.
    ``max_steps`` stops (with a checkpoint) after that many steps in this call:
    for tests and benchmarks of interruption. The model is built and trained
    on ``config.devices`` (data-parallel on more than one, see ``device_scope``).
    """
    devices = resolve_devices(config.devices, config.batch_size)
    with device_scope(devices):
        return _fit(config, data, Path(run_dir), devices=len(devices), resume=resume, on_epoch_end=on_epoch_end,
                    log=log, verbose=verbose, max_steps=max_steps)


def _fit(config, data, run_dir, *, devices, resume, on_epoch_end, log, verbose, max_steps):
    x_train, y_train, x_val, y_val = split_validation(config, data)
    n = usable_images(len(x_train), config.batch_size, devices)
    steps_per_epoch = math.ceil(n / config.batch_size)
    model, train_model = build_training(config, data.num_classes, steps_per_epoch)
    optimizer = train_model.optimizer
    # The fixed sample of the train/inference check: evenly spaced training images.
    check_rows = np.linspace(0, len(x_train) - 1, min(MODE_CHECK_IMAGES, len(x_train))).astype(np.int64)
    x_check, y_check = x_train[check_rows], y_train[check_rows]

    state = None
    if resume:
        state = load_checkpoint(run_dir, train_model, warn=log)
        if state is not None:
            log(f"resuming from epoch {state.epoch} step {state.step_in_epoch} "
                f"(global step {state.global_step})")
    state = state or TrainState()

    last_ckpt = time.monotonic()
    steps_this_call = 0
    first_step_seconds = None  # of a run that starts at step 0
    def should_stop() -> bool:
        return signals.received is not None or (max_steps is not None and steps_this_call >= max_steps)

    def check_finite(epoch: int) -> None:
        # A finite loss is computed before the step's update: the update itself
        # can still leave NaN or infinite weights, which must never be saved.
        bad = nonfinite_variables(_all_variables(train_model, optimizer))
        if bad:
            raise TrainingStopped(
                f"the weights became non-finite ({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}) "
                f"in epoch {epoch + 1} by global step {state.global_step}; the last good checkpoint is kept",
                status=3,
            )

    def checkpoint(epoch: int) -> None:
        check_finite(epoch)
        save_checkpoint(run_dir, train_model, state)

    with _StopSignals() as signals:
        for epoch in range(state.epoch, config.epochs):
            perm = epoch_permutation(config.seed, epoch, len(x_train))[:n]
            bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose,
                                      stateful_metrics=["loss", "accuracy"])
            if verbose:
                log(f"Epoch {epoch + 1}/{config.epochs}")
            for step in range(state.step_in_epoch, steps_per_epoch):
                idx = batch_indices(perm, step, config.batch_size)
                t0 = time.perf_counter()
                logs = train_batch(train_model, x_train, y_train, idx, data.num_classes)
                dt = time.perf_counter() - t0
                loss = logs["loss"]
                if not math.isfinite(loss):
                    raise TrainingStopped(
                        f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1} "
                        "(global step {}); the last good checkpoint is kept".format(state.global_step + 1),
                        status=3,
                    )
                state.train_seconds += dt
                state.epoch_seconds += dt
                state.loss_sum += loss * len(idx)
                state.correct_sum += float(logs["accuracy"]) * len(idx)
                state.seen += len(idx)
                state.step_in_epoch = step + 1
                state.global_step += 1
                steps_this_call += 1
                bar.update(step + 1, [("loss", state.loss_sum / state.seen),
                                      ("accuracy", state.correct_sum / state.seen)])
                if state.global_step == 1:
                    first_step_seconds = dt  # holds the step's compilation: left out of the estimate
                if (state.global_step == 4 and first_step_seconds is not None and epoch == 0
                        and step + 1 < steps_per_epoch):
                    per_step = (state.train_seconds - first_step_seconds) / 3
                    log(f"estimate: {hms(per_step * steps_per_epoch * config.epochs)} of training "
                        f"for {config.epochs} epochs ({per_step * steps_per_epoch:.0f} s an epoch, "
                        "from steps 2-4; evaluation not included)")
                if should_stop() and step + 1 < steps_per_epoch:
                    checkpoint(epoch)
                    _raise_stop(signals, run_dir)
                if time.monotonic() - last_ckpt > config.checkpoint_minutes * 60 and step + 1 < steps_per_epoch:
                    checkpoint(epoch)
                    last_ckpt = time.monotonic()

            # ---- epoch end: validation, history, the caller's files, checkpoint
            check_finite(epoch)
            val_probs = predict_probs(model, x_val) if len(x_val) else None
            accuracy = state.correct_sum / state.seen
            check_acc = float((predict_probs(model, x_check).argmax(1) == y_check).mean())
            mismatch = mode_mismatch(accuracy, check_acc, data.num_classes)
            row = {
                "epoch": epoch + 1,
                "loss": state.loss_sum / state.seen,
                "accuracy": accuracy,
                "train_inference_accuracy": check_acc,
                "inference_mismatch": int(mismatch),
                "val_loss": cross_entropy(val_probs, y_val) if val_probs is not None else None,
                "val_accuracy": float((val_probs.argmax(1) == y_val).mean()) if val_probs is not None else None,
                "lr": current_lr(optimizer),
                "seconds": state.epoch_seconds,
            }
            state.history.append(row)
            state.epoch = epoch + 1
            state.step_in_epoch = 0
            state.loss_sum = state.correct_sum = state.epoch_seconds = 0.0
            state.seen = 0
            eta = state.train_seconds / state.epoch * (config.epochs - state.epoch)
            log(f"epoch {state.epoch}/{config.epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}"
                + (f", val_accuracy {row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "")
                + f"; trained {hms(state.train_seconds)}, ETA {hms(eta)} of training")
            # Warn, do not stop: the moving statistics can still catch up (early in a
            # run the flag is often transient), the weights themselves are learning,
            # and the checkpoint lets a reader inspect or continue the run.
            if mismatch:
                log("WARNING: " + mismatch_message(row["epoch"], accuracy, check_acc, data.num_classes,
                                                   batch_norm=config.batch_norm))
            if on_epoch_end is not None:
                on_epoch_end(EpochEnd(epoch + 1, model, state, val_probs))
            save_checkpoint(run_dir, train_model, state)
            last_ckpt = time.monotonic()
            if should_stop() and state.epoch < config.epochs:
                _raise_stop(signals, run_dir)
    return model, state


def _raise_stop(signals: _StopSignals, run_dir) -> None:
    how = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}.get(
        signals.received, "stopped")
    status = 130 if signals.received == signal.SIGINT else 143 if signals.received else 0
    raise TrainingStopped(
        f"{how}; the state is saved: continue with `vggcifar train --resume --run-dir {run_dir}`", status)


def split_validation(config: TrainConfig, data: CifarData):
    """(x_train, y_train, x_val, y_val): the spec validates on the test set;
    other recipes hold out the last training images (how many:
    vggcifar.config.effective_val_split)."""
    if config.validate_on_test:
        return data.x_train, data.y_train, data.x_test, data.y_test
    n = len(data.x_train)
    k = effective_val_split(config, n)
    return data.x_train[:n - k], data.y_train[:n - k], data.x_train[n - k:], data.y_train[n - k:]
