"""What a run prints while it trains: the epoch header and progress bar, the first time estimate, one line per epoch.

The loop reports to a ``Progress``; it never formats text itself.
"""

from __future__ import annotations


def hms(seconds: float) -> str:
    """A duration as h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The lines of one training run, through ``log`` (print by default);
    ``verbose=0`` leaves out the per-step bar and the epoch header."""

    #: The first estimate waits for this many steps; the first call's steps
    #: hold the step's compilation and are left out.
    ESTIMATE_AFTER_STEPS = 4

    def __init__(self, epochs: int, steps_per_epoch: int, *, log=print, verbose: int = 1):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.log, self.verbose = log, verbose
        self._bar = None
        self.estimated = False

    def resumed(self, epoch: int, step_in_epoch: int, global_step: int) -> None:
        self.log(f"resuming from epoch {epoch} step {step_in_epoch} (global step {global_step})")

    def epoch_start(self, epoch: int) -> None:
        """``epoch`` counts from 0."""
        import keras

        self._bar = keras.utils.Progbar(self.steps_per_epoch, verbose=self.verbose,
                                        stateful_metrics=["loss", "accuracy"])
        if self.verbose:
            self.log(f"Epoch {epoch + 1}/{self.epochs}")

    def step(self, step: int, loss: float, accuracy: float) -> None:
        """``step`` steps of the epoch are done; loss and accuracy are the epoch's running means."""
        self._bar.update(step, [("loss", loss), ("accuracy", accuracy)])

    def estimate(self, seconds_per_step: float) -> None:
        per_epoch = seconds_per_step * self.steps_per_epoch
        self.estimated = True
        self.log(f"estimate: {hms(per_epoch * self.epochs)} of training for {self.epochs} epochs "
                 f"({per_epoch:.0f} s an epoch, from the steps after the first call; evaluation not included)")

    def epoch_end(self, row: dict, train_seconds: float) -> None:
        """One line: the epoch's figures, the training time so far and the time left."""
        done = row["epoch"]
        eta = train_seconds / done * (self.epochs - done)
        self.log(f"epoch {done}/{self.epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}"
                 + (f", val_accuracy {row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "")
                 + f"; trained {hms(train_seconds)}, ETA {hms(eta)} of training")
