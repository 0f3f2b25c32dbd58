"""The live view of a run: each epoch's figures as TensorBoard event files, written by the tensorboard package's own event writer on any Keras backend.

``tensorboard --logdir runs/`` then shows every run as it trains. The
figures are history.csv's, one point per epoch (the step is the epoch), in
two event folders as Keras' TensorBoard callback lays them out, so that the
training and validation curves of a figure share one chart:

    train/        loss, accuracy, learning_rate, images_per_second,
                  inference_mode_accuracy (the train/inference check)
    validation/   loss, accuracy

The writer is ``tensorboard.summary.writer.event_file_writer.EventFileWriter``
(what PyTorch's SummaryWriter uses too): it writes protocol buffers to a file,
no TensorFlow op runs, so the figures are the same whichever backend trained.
"""

from __future__ import annotations

import time
from pathlib import Path

#: history.csv's column -> (event folder, TensorBoard tag). images_per_second
#: is the epoch's training images over its training seconds.
SCALARS = {
    "loss": ("train", "loss"),
    "accuracy": ("train", "accuracy"),
    "val_loss": ("validation", "loss"),
    "val_accuracy": ("validation", "accuracy"),
    "lr": ("train", "learning_rate"),
    "images_per_second": ("train", "images_per_second"),
    "train_inference_accuracy": ("train", "inference_mode_accuracy"),
}
#: The event folders, by the names above.
SPLITS = ("train", "validation")


def _tensorboard():
    """The tensorboard package's event writer and protocol buffers, or a
    reason to install it."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard "
                         "(or the project's 'tensorboard' extra), or leave --tensorboard out") from None
    return EventFileWriter, event_pb2, summary_pb2


class EpochScalars:
    """Writes each epoch's figures under ``folders`` ({split: folder}, see
    SPLITS); ``images_per_epoch`` gives images per second. One event file per
    folder and process; ``close`` when the run ends."""

    def __init__(self, folders: dict[str, Path], *, images_per_epoch: int):
        self._writer_class, self._event_pb2, self._summary_pb2 = _tensorboard()
        self.folders, self.images_per_epoch = folders, images_per_epoch
        self._writers: dict = {}

    def write(self, row: dict) -> None:
        """One point per figure of ``row`` (a history.csv row) at step ``row["epoch"]``."""
        step = int(row["epoch"])
        values = dict(row)
        if row.get("seconds"):
            values["images_per_second"] = self.images_per_epoch / row["seconds"]
        now = time.time()
        for key, (split, tag) in SCALARS.items():
            if values.get(key) is None:
                continue
            value = self._summary_pb2.Summary.Value(tag=tag, simple_value=float(values[key]))
            self._writer(split, step).add_event(
                self._event_pb2.Event(wall_time=now, step=step, summary=self._summary_pb2.Summary(value=[value])))
        for writer in self._writers.values():
            writer.flush()  # seen by TensorBoard now, not in two minutes

    def _writer(self, split: str, step: int):
        if split not in self._writers:
            writer = self._writer_class(str(self.folders[split]))
            # A run resumed from a checkpoint may have written this epoch and
            # later ones before it stopped: a session start at this step tells
            # TensorBoard to drop those points of earlier event files.
            session = self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)
            writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=step, session_log=session))
            self._writers[split] = writer
        return self._writers[split]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
