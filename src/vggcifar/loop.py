"""Training: the loop that advances a run's state call by call, checkpoints it, and returns its result or raises why it stopped.

``fit`` takes resolved settings (vggcifar.settings.resolve) and decides
nothing again. The model and optimizer are vggcifar.build's, the batch order
vggcifar.order's (a function of the seed and the epoch, so a run resumed from
any checkpoint, mid-epoch included, passes through the same batches as an
uninterrupted one; on CPU the final weights are bit-identical), the steps
vggcifar.steps'. What the loop prints goes through ``vggcifar.progress``; what
a run keeps (milestones, reports) is its caller's (``vggcifar.runs``).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

import numpy as np

import keras

from vggcifar import backend, build, checkpoint, cluster, order, steps
from vggcifar.checkpoint import TrainState
from vggcifar.config import TrainConfig
from vggcifar.data import CifarData
from vggcifar.fsutil import first_line
from vggcifar.hooks import Hooks
from vggcifar.inference import on_device, predict_probs
from vggcifar.metrics import MODE_CHECK_IMAGES, cross_entropy, mode_mismatch
from vggcifar.progress import Progress
from vggcifar.rundir import RunDir
from vggcifar.settings import RunSettings
from vggcifar.stops import Diverged, Interrupted, ProcessLost, TrainingStopped

__all__ = ["fit", "FitResult", "EpochEnd", "TrainingStopped", "Interrupted", "Diverged", "ProcessLost"]


# --------------------------------------------------------------------------- #
# batches and the step
# --------------------------------------------------------------------------- #
def split_validation(config: TrainConfig, data: CifarData):
    """(x_train, y_train, x_val, y_val) of a resolved ``config``: the spec
    validates on the test set; other recipes hold out the last
    ``config.val_split`` training images."""
    if config.validate_on_test:
        return data.x_train, data.y_train, data.x_test, data.y_test
    n = len(data.x_train) - config.val_split
    return data.x_train[:n], data.y_train[:n], data.x_train[n:], data.y_train[n:]


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
    stopped: str | None = None  # why it ended before its last epoch without an error (a callback asked), or None


def fit(
    settings: RunSettings,
    data: CifarData,
    run_dir,
    *,
    resume: bool = False,
    on_epoch_end=None,
    log=print,
    verbose: int = 1,
    max_steps: int | None = None,
    callbacks=(),
) -> FitResult:
    """Train as ``settings`` say on ``data``, checkpointing in ``run_dir``.

    ``on_epoch_end(EpochEnd)`` runs after every epoch, before its checkpoint:
    a checkpoint at an epoch's end exists only once that epoch's files are
    written, so a run killed while writing them redoes them when resumed.
    No checkpoint and no epoch end ever sees non-finite weights: ``Diverged``
    is raised first, keeping the last good checkpoint. Ctrl-C and SIGTERM
    checkpoint and raise ``Interrupted``; so does ``max_steps`` (steps in this
    call: for tests and benchmarks of interruption). Keras ``callbacks`` get
    fit's hooks (vggcifar.hooks); one that sets ``model.stop_training`` ends the
    run at the next call's end, checkpointed, with ``FitResult.stopped`` set.
    The model is built and
    trained on ``settings.devices`` (data-parallel on more than one, see
    ``backend.device_scope``). Under several processes, a collective that
    fails because another process went away raises ``ProcessLost``.
    """
    if not isinstance(settings, RunSettings):
        raise TypeError(f"fit takes the settings vggcifar.settings.resolve makes. Received: {type(settings).__name__}")
    backend.configure_process()  # before anything compiles
    with backend.device_scope(list(settings.devices)):
        try:
            loop = _Loop(settings, data, RunDir(run_dir), log=log, verbose=verbose)
            return loop.run(resume=resume, on_epoch_end=on_epoch_end, max_steps=max_steps,
                            hooks=Hooks(callbacks, loop.train_model, settings))
        except Exception as exc:
            if backend.several_processes() and cluster.collective_failed(exc):
                raise ProcessLost(f"a collective across processes failed: {first_line(exc)}") from None
            raise


class _Loop:
    """One call of ``fit``: the model, the data split and the state it advances."""

    def __init__(self, settings: RunSettings, data: CifarData, run: RunDir, *, log, verbose: int):
        config = settings.config
        self.config, self.run_dir, self.log = config, run, log
        self.num_classes = data.num_classes
        self.x, self.y, self.x_val, self.y_val = split_validation(config, data)
        if backend.several_processes():
            check_same_data(self.x, self.y)
        self.used, self.steps_per_epoch = settings.train_images, settings.steps_per_epoch
        self.per_call = config.steps_per_execution
        self.model, self.train_model = build.build_training(config, data.num_classes, self.steps_per_epoch, self.x)
        self.runner = make_runner(self.train_model, self.x, self.y, data.num_classes, per_call=self.per_call)
        # The fixed sample of the train/inference check: evenly spaced training images.
        rows = np.linspace(0, len(self.x) - 1, min(MODE_CHECK_IMAGES, len(self.x))).astype(np.int64)
        self.x_check, self.y_check = self.x[rows], self.y[rows]
        # Both predicted after every epoch: put on the device(s) once.
        self.x_val, self.x_check = on_device(self.x_val), on_device(self.x_check)
        self.progress = Progress(config.epochs, self.steps_per_epoch, batch_size=config.batch_size,
                                 images=self.used, log=log, verbose=verbose)
        self.state = TrainState()

    def run(self, *, resume: bool, on_epoch_end, max_steps: int | None, hooks: Hooks) -> FitResult:
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
        stream = order.chunks(config.seed, len(self.x), config.batch_size, self.per_call, used=self.used,
                              epoch=state.epoch, step=state.step_in_epoch)
        hooks.train_begin()
        with _StopSignals() as signals:
            for epoch, step, rows in stream:
                if new_epoch:
                    self.progress.epoch_start(epoch)
                    hooks.epoch_begin(epoch)
                    new_epoch = False
                self._train_call(epoch, step, rows)
                hooks.batch_end(state)
                steps_this_call += len(rows)
                epoch_ended = step + len(rows) == self.steps_per_epoch
                if epoch_ended:
                    self._end_epoch(epoch, on_epoch_end)  # its checkpoint included
                    hooks.epoch_end(epoch, state.history[-1])
                    last_checkpoint = time.monotonic()
                    new_epoch = True
                    if state.epoch == config.epochs:
                        break
                # The one decision after each call: stop (a signal, the step
                # budget, a callback) or checkpoint on time; at an epoch's end
                # the state is saved already.
                due = not epoch_ended and time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60
                signum, due, asked = self._agree(signals.received, due, hooks.stop_asked())
                if signum is not None or steps_this_call >= budget or asked:
                    if not epoch_ended:
                        self._checkpoint(epoch)
                    if signum is None and asked:
                        hooks.train_end()
                        return FitResult(self.model, state, stopped="a callback asked to stop training")
                    raise self._interrupted(signum)
                if due:
                    self._checkpoint(epoch)
                    last_checkpoint = time.monotonic()
        hooks.train_end()
        return FitResult(self.model, state)

    def _train_call(self, epoch: int, step: int, rows: np.ndarray) -> None:
        """One call of the runner: its steps trained, their losses checked and counted."""
        t0 = time.perf_counter()
        losses, accuracies = self.runner.run(rows)
        dt = time.perf_counter() - t0
        bad = np.flatnonzero(~np.isfinite(losses))
        if len(bad):  # the call's later steps ran on from it: nothing of it is kept
            raise Diverged(f"the training loss became {losses[bad[0]]} at epoch {epoch + 1}, step "
                           f"{step + bad[0] + 1} (global step {self.state.global_step + bad[0] + 1}); the last "
                           "good checkpoint is kept")
        self._count(losses, accuracies, rows.shape[1], dt)

    @staticmethod
    def _agree(received: int | None, due: bool, asked: bool) -> tuple[int | None, bool, bool]:
        """(the signal to stop on, whether a timed checkpoint is due, whether a
        callback asked to stop), the same on every process: under several, any
        one's signal, clock and callbacks decide for all (one small collective a
        call), so all stop and checkpoint at the same step."""
        signum, due, asked = backend.agree_max([received or 0, due, asked])
        return signum or None, bool(due), bool(asked)

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

    @staticmethod
    def _interrupted(signum: int | None) -> Interrupted:
        how = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}.get(signum, "stopped")
        return Interrupted(f"{how}; the state is saved", signum)

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
            "lr": build.current_lr(self.train_model.optimizer),
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
