"""Keras callbacks driven by the project's own training loop, with the hooks ``model.fit`` gives them, so EarlyStopping, CSVLogger or a tracker's logger work as they do under fit."""

from __future__ import annotations

import keras

from vggcifar.checkpoint import TrainState
from vggcifar.settings import RunSettings


class Hooks:
    """Keras callbacks, called as ``model.fit`` calls them: train begin and
    end, each epoch's begin and end with its logs (loss, accuracy, val_loss,
    val_accuracy, learning_rate), and a batch's end at each call's end (its
    last step, with the epoch's running loss and accuracy). They see the
    compiled training model, whose ``stop_training`` they may set."""

    def __init__(self, callbacks, train_model, settings: RunSettings):
        self.model = train_model
        self.list = keras.callbacks.CallbackList(list(callbacks or ()), model=train_model)
        self.list.set_params({"epochs": settings.config.epochs, "steps": settings.steps_per_epoch, "verbose": 0})
        self.active = bool(callbacks)
        train_model.stop_training = False

    def train_begin(self) -> None:
        if self.active:
            self.list.on_train_begin()

    def train_end(self) -> None:
        if self.active:
            self.list.on_train_end()

    def epoch_begin(self, epoch: int) -> None:
        if self.active:
            self.list.on_epoch_begin(epoch)

    def batch_end(self, state: TrainState) -> None:
        if self.active:
            self.list.on_train_batch_end(state.step_in_epoch - 1, {"loss": state.loss_sum / state.seen,
                                                                   "accuracy": state.correct_sum / state.seen})

    def epoch_end(self, epoch: int, row: dict) -> None:
        if self.active:
            logs = {"loss": row["loss"], "accuracy": row["accuracy"], "learning_rate": row["lr"]}
            logs.update({k: row[k] for k in ("val_loss", "val_accuracy") if row.get(k) is not None})
            self.list.on_epoch_end(epoch, logs)

    def stop_asked(self) -> bool:
        return bool(getattr(self.model, "stop_training", False))

