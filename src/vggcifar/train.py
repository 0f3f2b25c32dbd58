"""Training: the model and optimizer a config describes, its batches, the step, and ``fit``, which returns its result or raises why it stopped.

The loop owns its shuffle (a permutation drawn from the seed and the epoch), so
a run resumed from any checkpoint, mid-epoch included, passes through the same
batches as an uninterrupted one; on CPU the final weights are bit-identical.
What the loop prints goes through ``vggcifar.progress``; what a run keeps
(milestones, reports) is its caller's (``vggcifar.experiment``).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

import numpy as np

import keras

from vggcifar import backend, checkpoint, cluster, steps
from vggcifar.budget import steps_per_epoch as count_steps
from vggcifar.budget import warmup_steps
from vggcifar.checkpoint import TrainState
from vggcifar.config import TrainConfig, effective_val_split
from vggcifar.data import CifarData
from vggcifar.fsutil import first_line
from vggcifar.inference import on_device, predict_probs
from vggcifar.metrics import MODE_CHECK_IMAGES, cross_entropy, mode_mismatch
from vggcifar.model import build_vgg
from vggcifar.progress import Progress
from vggcifar.rundir import RunDir


class TrainingStopped(Exception):
    """Training ended before its last epoch; ``reason`` says why, for a reader."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Interrupted(TrainingStopped):
    """Stopped on request: ``signum`` (SIGINT, SIGTERM), or None for a step
    budget (``max_steps``). The state is checkpointed; --resume continues."""

    def __init__(self, reason: str, signum: int | None = None):
        super().__init__(reason)
        self.signum = signum


class Diverged(TrainingStopped):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


class ProcessLost(TrainingStopped):
    """Under several processes, a collective failed because another process
    went away. The checkpoints are intact; --resume on every process continues."""


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
        # One 8x8 square (1/16 of the area) of zeros in every image: a factor
        # of (1, 1) erases always (a single 1.0 would draw the chance from [0, 1]).
        out.append(keras.layers.RandomErasing(
            factor=(1.0, 1.0), scale=(0.0625, 0.0625), fill_value=0, seed=seed + 2, name="aug_cutout"))
    return out


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """The network a run trains and saves: it takes raw uint8 images,
    channels-last, whatever layout it computes in."""
    return build_vgg(
        config.model,
        num_classes=num_classes,
        data_format=backend.resolve_data_format(config.data_format),
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
    warmup = warmup_steps(config, steps_per_epoch)
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


def build_training(config: TrainConfig, num_classes: int, steps_per_epoch: int):
    """(model, train_model): the saved network, and it behind augmentation,
    compiled with the config's optimizer and loss."""
    precision = backend.set_precision(config.precision)
    backend.set_random_seed(config.seed)  # no TensorFlow import on another backend
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


def _learning_rate(optimizer, iterations):
    with keras.StatelessScope(state_mapping=[(optimizer.iterations, iterations)]):
        return keras.ops.cast(optimizer.learning_rate, "float32")


def current_lr(optimizer) -> float:
    """The learning rate of the optimizer's next step, computed on the device
    by one compiled call (its schedule's ops one by one would each send their
    constants to the device) and read once."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = backend.compiled_for(inner, _learning_rate)(inner.iterations.value)
    return float(keras.ops.convert_to_numpy(lr))


# --------------------------------------------------------------------------- #
# batches and the step
# --------------------------------------------------------------------------- #
def split_validation(config: TrainConfig, data: CifarData):
    """(x_train, y_train, x_val, y_val): the spec validates on the test set;
    other recipes hold out the last training images (how many:
    vggcifar.config.effective_val_split)."""
    if config.validate_on_test:
        return data.x_train, data.y_train, data.x_test, data.y_test
    n = len(data.x_train)
    k = effective_val_split(config, n)
    return data.x_train[:n - k], data.y_train[:n - k], data.x_train[n - k:], data.y_train[n - k:]


def usable_images(n: int, batch_size: int, devices: int) -> int:
    """Images an epoch trains on: all but the remainder of a short last batch
    that does not split among the devices (at most devices - 1 images, different
    ones each epoch, as the shuffle moves them)."""
    return n - (n % batch_size) % devices


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of one epoch: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def batch_indices(perm: np.ndarray, step: int, batch_size: int) -> np.ndarray:
    """Rows of step ``step`` of an epoch shuffled by ``perm``, sorted so that
    the gather from the uint8 set reads memory in order (the batch is the same
    set of images, and the step's mean loss does not depend on their order)."""
    return np.sort(perm[step * batch_size:(step + 1) * batch_size])


def epoch_order(seed: int, epoch: int, images: int, batch_size: int, used: int | None = None) -> np.ndarray:
    """Every row one epoch trains on, in step order (step s's are
    ``batch_indices`` of its shuffle), as one int32 array: what a runner puts
    on the device once an epoch."""
    used = images if used is None else used
    perm = epoch_permutation(seed, epoch, images)[:used]
    full = used // batch_size
    order = np.sort(perm[:full * batch_size].reshape(full, batch_size), axis=1).reshape(-1)
    return np.concatenate([order, np.sort(perm[full * batch_size:])]).astype(np.int32)


def batches(seed: int, images: int, batch_size: int, *, used: int | None = None, epoch: int = 0, step: int = 0):
    """(epoch, step, rows) of every step from (``epoch``, ``step``) on, without
    end: each epoch a new shuffle of ``images`` rows, of which the first
    ``used`` (default all) are trained on."""
    used = images if used is None else used
    steps = count_steps(used, batch_size)
    while True:
        perm = epoch_permutation(seed, epoch, images)[:used]
        for s in range(step, steps):
            yield epoch, s, batch_indices(perm, s, batch_size)
        epoch, step = epoch + 1, 0


def chunks(seed: int, images: int, batch_size: int, per_call: int, *, used: int | None = None, epoch: int = 0,
           step: int = 0):
    """(epoch, first step, rows) of every call from (``epoch``, ``step``) on:
    ``rows`` is a (k, batch) array of the k <= ``per_call`` steps that one call
    runs (a ``steps.CallRows``: a view of its epoch's ``epoch_order``). Calls
    never cross an epoch's end, end at multiples of ``per_call`` steps from the
    epoch's start (so a resumed run makes the same calls), and a short last
    batch is a call of its own."""
    used = images if used is None else used
    steps_per_epoch = count_steps(used, batch_size)
    full = used // batch_size  # steps of a whole batch
    while True:
        order = epoch_order(seed, epoch, images, batch_size, used)
        s = step
        while s < steps_per_epoch:
            stop = s + 1 if s >= full else min(full, (s // per_call + 1) * per_call)
            yield epoch, s, steps.CallRows.of(order, s, stop, batch_size)
            s = stop
        epoch, step = epoch + 1, 0


def make_runner(train_model, x: np.ndarray, y: np.ndarray, num_classes: int, *, per_call: int = 1):
    """What runs the training steps: one compiled call per K <= ``per_call``
    steps (vggcifar.steps), on one device or, inside ``backend.device_scope``,
    data-parallel on several (of one process or several)."""
    return steps.make_runner(train_model, x, y, num_classes, per_call=per_call)


def check_same_data(x: np.ndarray, y: np.ndarray) -> None:
    """Under several processes (a collective): raise ValueError on every
    process unless all train on the same images and labels. Each feeds its
    own rows of every batch from its own copy, so copies that differ would
    train on a mix without a word."""
    import zlib

    digest = zlib.crc32(np.ascontiguousarray(y).tobytes(), zlib.crc32(np.ascontiguousarray(x).tobytes()))
    rows = backend.gather_ints([digest >> 16, digest & 0xFFFF, len(x)], 3)
    differ = [i for i, row in enumerate(rows) if not np.array_equal(row, rows[0])]
    if differ:
        raise ValueError(f"process {differ[0]}'s training set differs from process 0's ({rows[differ[0]][2]} and "
                         f"{rows[0][2]} images, CRC-32 differs): give every process the same data "
                         "(the same --data archive and limits, or --dataset synthetic)")


def nonfinite_variables(variables) -> list[str]:
    """Paths of the float variables that hold a NaN or an infinity (checked
    on the device by one compiled reduction; one array of flags is read)."""
    floats = [v for v in variables if "float" in str(v.dtype)]
    flags = backend.finite_flags([v.value for v in floats])
    return [v.path for v, finite in zip(floats, flags) if not finite]


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


@dataclass
class FitResult:
    model: keras.Model  # the network as saved (no augmentation in front)
    state: TrainState


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
) -> FitResult:
    """Train ``config`` on ``data``, checkpointing in ``run_dir``.

    ``on_epoch_end(EpochEnd)`` runs after every epoch, before its checkpoint:
    a checkpoint at an epoch's end exists only once that epoch's files are
    written, so a run killed while writing them redoes them when resumed.
    No checkpoint and no epoch end ever sees non-finite weights: ``Diverged``
    is raised first, keeping the last good checkpoint. Ctrl-C and SIGTERM
    checkpoint and raise ``Interrupted``; so does ``max_steps`` (steps in this
    call: for tests and benchmarks of interruption). The model is built and
    trained on ``config.devices`` (data-parallel on more than one, see
    ``backend.device_scope``). Under several processes, a collective that
    fails because another process went away raises ``ProcessLost``.
    """
    backend.configure_process()  # before anything compiles
    devices = backend.resolve_devices(config.devices, config.batch_size)
    with backend.device_scope(devices):
        try:
            loop = _Loop(config, data, RunDir(run_dir), devices=len(devices), log=log, verbose=verbose)
            return loop.run(resume=resume, on_epoch_end=on_epoch_end, max_steps=max_steps)
        except Exception as exc:
            if backend.several_processes() and cluster.collective_failed(exc):
                raise ProcessLost(f"a collective across processes failed: {first_line(exc)}") from None
            raise


class _Loop:
    """One call of ``fit``: the model, the data split and the state it advances."""

    def __init__(self, config: TrainConfig, data: CifarData, run: RunDir, *, devices: int, log, verbose: int):
        self.config, self.run_dir, self.log = config, run, log
        self.num_classes = data.num_classes
        self.x, self.y, self.x_val, self.y_val = split_validation(config, data)
        if backend.several_processes():
            check_same_data(self.x, self.y)
        self.used = usable_images(len(self.x), config.batch_size, devices)
        self.steps_per_epoch = count_steps(self.used, config.batch_size)
        self.model, self.train_model = build_training(config, data.num_classes, self.steps_per_epoch)
        self.per_call = backend.resolve_steps_per_execution(config.steps_per_execution)
        self.runner = make_runner(self.train_model, self.x, self.y, data.num_classes, per_call=self.per_call)
        # The fixed sample of the train/inference check: evenly spaced training images.
        rows = np.linspace(0, len(self.x) - 1, min(MODE_CHECK_IMAGES, len(self.x))).astype(np.int64)
        self.x_check, self.y_check = self.x[rows], self.y[rows]
        # Both predicted after every epoch: put on the device(s) once.
        self.x_val, self.x_check = on_device(self.x_val), on_device(self.x_check)
        self.progress = Progress(config.epochs, self.steps_per_epoch, batch_size=config.batch_size,
                                 images=self.used, log=log, verbose=verbose)
        self.state = TrainState()

    def run(self, *, resume: bool, on_epoch_end, max_steps: int | None) -> FitResult:
        config, state = self.config, self.state
        if resume:
            restored = checkpoint.load(self.run_dir, self.train_model, warn=self.log)
            if restored is not None:
                self.state = state = restored
                self.progress.resumed(state.epoch, state.step_in_epoch, state.global_step)
        if state.epoch >= config.epochs:
            return FitResult(self.model, state)
        last_checkpoint = time.monotonic()
        steps_this_call = 0
        budget = math.inf if max_steps is None else max_steps
        new_epoch = True
        stream = chunks(config.seed, len(self.x), config.batch_size, self.per_call, used=self.used,
                        epoch=state.epoch, step=state.step_in_epoch)
        with _StopSignals() as signals:
            for epoch, step, rows in stream:
                if new_epoch:
                    self.progress.epoch_start(epoch)
                    new_epoch = False
                t0 = time.perf_counter()
                losses, accuracies = self.runner.run(rows)
                dt = time.perf_counter() - t0
                bad = np.flatnonzero(~np.isfinite(losses))
                if len(bad):  # the chunk's later steps ran on from it: nothing of it is kept
                    raise Diverged(f"the training loss became {losses[bad[0]]} at epoch {epoch + 1}, step "
                                   f"{step + bad[0] + 1} (global step {state.global_step + bad[0] + 1}); the last "
                                   "good checkpoint is kept")
                self._count(losses, accuracies, rows.shape[1], dt)
                steps_this_call += len(rows)
                last_of_epoch = step + len(rows) == self.steps_per_epoch
                if not last_of_epoch:
                    signum, due = self._agree(signals.received,
                                              time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60)
                    if signum is not None or steps_this_call >= budget:
                        self._checkpoint(epoch)
                        raise self._interrupted(signum)
                    if due:
                        self._checkpoint(epoch)
                        last_checkpoint = time.monotonic()
                    continue
                self._end_epoch(epoch, on_epoch_end)
                last_checkpoint = time.monotonic()
                new_epoch = True
                if state.epoch == config.epochs:
                    break
                signum, _ = self._agree(signals.received, False)
                if signum is not None or steps_this_call >= budget:
                    raise self._interrupted(signum)
        return FitResult(self.model, state)

    @staticmethod
    def _agree(received: int | None, due: bool) -> tuple[int | None, bool]:
        """(the signal to stop on, whether a timed checkpoint is due), the same
        on every process: under several, any one's signal and clock decide for
        all (one small collective a call), so all stop and checkpoint at the
        same step."""
        signum, due = backend.agree_max([received or 0, due])
        return signum or None, bool(due)

    def _count(self, losses: np.ndarray, accuracies: np.ndarray, images: int, seconds: float) -> None:
        """Add one call's steps (``images`` each) to the state and the progress bar."""
        state = self.state
        state.train_seconds += seconds
        state.epoch_seconds += seconds
        for loss, accuracy in zip(losses.tolist(), accuracies.tolist()):  # in step order, as one step a call adds
            state.loss_sum += loss * images
            state.correct_sum += accuracy * images
        state.seen += images * len(losses)
        state.step_in_epoch += len(losses)
        state.global_step += len(losses)
        self.progress.step(state.step_in_epoch, state.loss_sum / state.seen, state.correct_sum / state.seen,
                           seconds)

    def _check_finite(self, epoch: int) -> None:
        # A finite loss is computed before the step's update: the update itself
        # can still leave NaN or infinite weights, which must never be saved.
        bad = nonfinite_variables(checkpoint.training_variables(self.train_model))
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise Diverged(f"the weights became non-finite ({bad[0]}{more}) in epoch {epoch + 1} by global step "
                           f"{self.state.global_step}; the last good checkpoint is kept")

    def _checkpoint(self, epoch: int) -> None:
        self._check_finite(epoch)
        checkpoint.save(self.run_dir, self.train_model, self.state)

    def _interrupted(self, signum: int | None) -> Interrupted:
        how = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}.get(signum, "stopped")
        return Interrupted(f"{how}; the state is saved: continue with "
                           f"`vggcifar train --resume --run-dir {self.run_dir.path}`", signum)

    def _end_epoch(self, epoch: int, on_epoch_end) -> None:
        """Validation, the train/inference check, history; the caller's files; the checkpoint."""
        state = self.state
        self._check_finite(epoch)
        val_probs = predict_probs(self.model, self.x_val) if len(self.x_val) else None
        accuracy = state.correct_sum / state.seen
        check_acc = float((predict_probs(self.model, self.x_check).argmax(1) == self.y_check).mean())
        row = {
            "epoch": epoch + 1,
            "loss": state.loss_sum / state.seen,
            "accuracy": accuracy,
            "train_inference_accuracy": check_acc,
            "inference_mismatch": int(mode_mismatch(accuracy, check_acc, self.num_classes)),
            "val_loss": cross_entropy(val_probs, self.y_val) if val_probs is not None else None,
            "val_accuracy": float((val_probs.argmax(1) == self.y_val).mean()) if val_probs is not None else None,
            "lr": current_lr(self.train_model.optimizer),
            "seconds": state.epoch_seconds,
        }
        state.history.append(row)
        state.epoch = epoch + 1
        state.step_in_epoch = 0
        state.loss_sum = state.correct_sum = state.epoch_seconds = 0.0
        state.seen = 0
        self.progress.epoch_end(row, state.train_seconds)
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, self.model, state, val_probs))
        checkpoint.save(self.run_dir, self.train_model, state)
