"""What a run prints while it trains: the progress of each epoch (Keras' bar on a terminal, a few plain lines elsewhere), the first time estimate, one line per epoch.

The loop reports to a ``Progress``: steps done in the epoch and the seconds
they took, one step or several at a time; it never formats text itself.

Times are training time, as the report's "time of learning" counts it: the
steps, their compilation included; validation and checkpoints are not.
Two things make early steps unlike the rest. The first steps a process runs
hold the step's compilation (seconds, against a fraction of a second for a
compiled step), and a short last batch compiles the step once more for its
shape, at the end of the first epoch. The estimates count the compilation
already spent and project the remaining steps at the rate of compiled steps
(``steady_seconds_per_step``), so neither inflates nor hides in them.
"""

from __future__ import annotations

import math
import statistics
import sys


def hms(seconds: float) -> str:
    """A duration as h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _duration(seconds: float) -> str:
    """A short duration as "0.8 s" or "42 s", a long one as h:mm:ss."""
    if seconds >= 600:
        return hms(seconds)
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


#: A short last batch compiles the step again for its shape, once per
#: process: this share of the first steps' compilation, as measured here
#: (quarter-width VGG-16, batch 128, 2-core CPU: 0.55 and 0.67 on TensorFlow,
#: 0.75 on JAX).
RECOMPILE_SHARE = 0.6
#: A chunk of steps slower per step than this many times the median of its
#: epoch is a one-off (a compilation), not the rate of the steps to come: a
#: compilation costs tens to hundreds of steps, noise on a shared CPU about 2x.
ONE_OFF_FACTOR = 4.0


def steady_seconds_per_step(chunks: list[tuple[int, float]]) -> float | None:
    """Seconds per step of compiled steps: ``chunks`` are (steps, seconds) as
    they were run; those slower per step than ``ONE_OFF_FACTOR`` times the
    median are left out (the median is robust to them; the mean of the rest
    is what a long run of steps sums to). None without chunks."""
    chunks = [(n, s) for n, s in chunks if n > 0]
    if not chunks:
        return None
    median = statistics.median(s / n for n, s in chunks)
    kept = [(n, s) for n, s in chunks if s / n <= ONE_OFF_FACTOR * median]
    return sum(s for _, s in kept) / sum(n for n, _ in kept)


class Progress:
    """The lines of one training run, through ``log`` (print by default).

    ``interactive`` (default: whether stdout is a terminal) chooses Keras'
    progress bar, redrawn in place, or plain lines with no escape codes (nohup,
    SLURM, CI): the run's first at the first tenth of its first epoch (its
    speed, early), then one each time the epoch passes another tenth once
    ``PLAIN_SECONDS`` of training have passed since the last one: at most
    ``PLAIN_LINES`` an epoch, none for a short epoch, a sign of life every half
    minute or so in a long one. ``verbose=0`` leaves out both and the epoch header.
    ``batch_size`` gives the plain lines their images per second; with
    ``images`` (an epoch's) too, the first estimate knows whether a short last
    batch will compile the step again.
    """

    #: Plain-text progress lines an epoch at most (one each tenth of it, the
    #: last tenth left to the epoch's own line)...
    PLAIN_LINES = 9
    #: ...and this many seconds of training at least between two of them.
    PLAIN_SECONDS = 30.0
    #: The first estimate waits for this many compiled steps...
    ESTIMATE_MIN_STEPS = 3
    #: ...and this many seconds of them: a few steps on a shared CPU vary 2x.
    ESTIMATE_MIN_SECONDS = 2.0

    def __init__(self, epochs: int, steps_per_epoch: int, *, batch_size: int | None = None,
                 images: int | None = None, log=print, verbose: int = 1, interactive: bool | None = None):
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size
        self.short_last_batch = bool(batch_size and images and images % batch_size)
        self.log, self.verbose = log, verbose
        if interactive is None:
            interactive = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self.interactive = interactive
        self._bar = None
        self._epoch = 0  # counts from 0
        self._step = 0  # steps done in the epoch
        self._resumed_step: int | None = None  # where a resumed run's first epoch starts
        self._resumed = False
        self._warmup: tuple[int, float] | None = None  # the process's first (steps, seconds): it compiles
        self._chunks: list[tuple[int, float]] = []  # this epoch's (steps, seconds), the warm-up left out
        self._spent = 0.0  # training seconds in this process
        self._steady: float | None = None  # seconds per compiled step, from the last epoch
        self._estimated = False
        self._ended_an_epoch = False  # in this process: the short last batch has compiled
        self._line_step = 0  # the step of the last plain line
        self._line_chunks: list[tuple[int, float]] = []  # since then
        self._line_spent: float | None = None  # training seconds in this process at the last plain line

    # ---- the loop's calls -----------------------------------------------------
    def resumed(self, epoch: int, step_in_epoch: int, global_step: int) -> None:
        self._resumed, self._resumed_step = True, step_in_epoch
        self.log(f"resuming from epoch {epoch} step {step_in_epoch} (global step {global_step})")

    def epoch_start(self, epoch: int) -> None:
        """``epoch`` counts from 0."""
        self._epoch = epoch
        self._step = self._line_step = self._resumed_step or 0
        self._resumed_step = None
        self._chunks, self._line_chunks = [], []
        if self.verbose and self.interactive:
            import keras

            self._bar = keras.utils.Progbar(self.steps_per_epoch, verbose=self.verbose,
                                            stateful_metrics=["loss", "accuracy"])
            self.log(f"Epoch {epoch + 1}/{self.epochs}")

    def step(self, step: int, loss: float, accuracy: float, seconds: float | None = None) -> None:
        """``step`` steps of the epoch are done, one or several since the last
        call, which took ``seconds`` of training; loss and accuracy are the
        epoch's running means."""
        steps, self._step = step - self._step, step
        if seconds is not None and steps > 0:
            self._add_chunk(steps, seconds)
        if self.verbose and self.interactive:
            self._bar.update(step, [("loss", loss), ("accuracy", accuracy)])
        elif self.verbose:
            self._plain_line(step, loss, accuracy)
        if not self._estimated and seconds is not None and step < self.steps_per_epoch:
            self._maybe_estimate()

    def epoch_end(self, row: dict, train_seconds: float) -> None:
        """One line: the epoch's figures, the training time so far and the time left."""
        done = row["epoch"]
        self._ended_an_epoch = True
        self._steady = steady_seconds_per_step(self._chunks) or self._steady
        if self._steady is not None:
            eta = (self.epochs - done) * self.steps_per_epoch * self._steady
        else:  # no step times given
            eta = train_seconds / done * (self.epochs - done)
        self.log(f"epoch {done}/{self.epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}"
                 + (f", val_accuracy {row['val_accuracy']:.4f}" if row.get("val_accuracy") is not None else "")
                 + f"; trained {hms(train_seconds)}, ETA {hms(eta)} of training")

    # ---- the first estimate -----------------------------------------------------
    def _add_chunk(self, steps: int, seconds: float) -> None:
        self._spent += seconds
        if self._warmup is None:
            self._warmup = (steps, seconds)
        else:
            self._chunks.append((steps, seconds))
            self._line_chunks.append((steps, seconds))

    def _maybe_estimate(self) -> None:
        if (sum(n for n, _ in self._chunks) < self.ESTIMATE_MIN_STEPS
                or sum(s for _, s in self._chunks) < self.ESTIMATE_MIN_SECONDS):
            return
        self._estimated = True
        rate = steady_seconds_per_step(self._chunks)
        remaining = (self.epochs - self._epoch) * self.steps_per_epoch - self._step
        warmup_steps, warmup_seconds = self._warmup
        compiling = max(0.0, warmup_seconds - warmup_steps * rate)
        recompiling = RECOMPILE_SHARE * compiling if self.short_last_batch and not self._ended_an_epoch else 0.0
        self.estimate(rate, spent=self._spent, remaining_steps=remaining, compiling=compiling,
                      recompiling=recompiling)

    def estimate(self, seconds_per_step: float, *, spent: float, remaining_steps: int, compiling: float,
                 recompiling: float = 0.0) -> None:
        """The first estimate: ``spent`` seconds of training so far (of which
        about ``compiling`` compiled the step), ``remaining_steps`` at
        ``seconds_per_step``, and ``recompiling`` for the short last batch."""
        total = spent + remaining_steps * seconds_per_step + recompiling
        what = (f"{hms(total)} more of training to epoch {self.epochs}" if self._resumed
                else f"{hms(total)} of training for {self.epochs} epochs")
        how = f"{_duration(seconds_per_step * self.steps_per_epoch)} an epoch"
        if compiling >= 0.05:
            how += f"; {_duration(compiling)} of compilation"
            if recompiling:
                how += f", about {_duration(recompiling)} more for the short last batch"
        self.log(f"estimate: {what} ({how}; validation and checkpoints not included)")

    # ---- plain lines --------------------------------------------------------------
    def _plain_line(self, step: int, loss: float, accuracy: float) -> None:
        """A line when the epoch passes another tenth, never at its end (the
        epoch's own line follows), the first of the process at once and the
        others PLAIN_SECONDS of training apart."""
        every = max(1, math.ceil(self.steps_per_epoch / (self.PLAIN_LINES + 1)))
        if step >= self.steps_per_epoch or step // every <= self._line_step // every:
            return
        if self._line_spent is not None and self._spent - self._line_spent < self.PLAIN_SECONDS:
            return
        self._line_spent = self._spent
        parts = [f"loss {loss:.4f}", f"accuracy {accuracy:.4f}"]
        rate = steady_seconds_per_step(self._line_chunks)
        if rate:
            if self.batch_size:
                parts.append(f"{self.batch_size / rate:.0f} img/s")
            parts.append(f"epoch ETA {hms((self.steps_per_epoch - step) * rate)}")
        self._line_step, self._line_chunks = step, []
        self.log(f"epoch {self._epoch + 1}/{self.epochs} step {step}/{self.steps_per_epoch} "
                 f"({100 * step // self.steps_per_epoch}%): " + ", ".join(parts))
