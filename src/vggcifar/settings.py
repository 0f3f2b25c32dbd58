"""A run's settings, resolved once: every "auto" of its config settled for this machine and data set, and what follows from them (the images an epoch trains on, steps an epoch, devices, milestones).

``resolve`` runs once, at the top of a run; ``config.json`` records its
config. Everything below it (the loop, the bench) takes a ``RunSettings`` and
decides nothing again: a ``RunSettings`` whose config still says "auto" is a
programming error, raised when it is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vggcifar import backend
from vggcifar.budget import steps_per_epoch as count_steps
from vggcifar.config import TrainConfig, resolve_val_split
from vggcifar.request import check_milestones


def usable_images(n: int, batch_size: int, devices: int) -> int:
    """Images an epoch trains on out of ``n``: all but the remainder of a
    short last batch that does not split among the devices (at most devices - 1
    images, different ones each epoch, as the shuffle moves them)."""
    return n - (n % batch_size) % devices


#: The config fields "auto" stands in, and the word each may hold until resolved.
_UNRESOLVED = {"data_format": "auto", "precision": "auto", "steps_per_execution": "auto", "devices": "all"}


@dataclass(frozen=True)
class RunSettings:
    """What a run does, every decision taken: made by ``resolve`` only."""

    config: TrainConfig  # no "auto": the split, layout, precision, steps per call and device count written in
    devices: tuple[str, ...]  # the devices it trains on, data-parallel when more than one
    train_images: int  # images an epoch trains on: after the validation split and the devices' share
    val_images: int  # held out of the training set for validation (0: none, or the spec's test set)
    steps_per_epoch: int
    milestones: tuple[int, ...]  # epochs evaluated and saved, the last one the last epoch

    def __post_init__(self):
        c = self.config
        loose = [f"{k}={getattr(c, k)!r}" for k, word in _UNRESOLVED.items() if getattr(c, k) == word]
        if c.val_split is None:
            loose.append("val_split=None")
        if loose:
            raise TypeError(f"RunSettings needs a resolved config; {', '.join(loose)} is not: "
                            "make it with vggcifar.settings.resolve")


def resolve(config: TrainConfig, images: int, milestones=None) -> RunSettings:
    """``config`` settled for a training set of ``images`` images on this
    machine: the validation split (vggcifar.config.effective_val_split), the
    conv layout, the precision and the steps per call for this backend and
    device, the devices (a ValueError naming the fix when they cannot be had),
    and the milestones (default: the last epoch) checked."""
    milestones = check_milestones(config.epochs, milestones or [config.epochs])
    config = resolve_val_split(config, images)
    devices = backend.resolve_devices(config.devices, config.batch_size)
    config = dataclasses.replace(
        config,
        data_format=backend.resolve_data_format(config.data_format),
        precision=backend.resolve_precision(config.precision),
        steps_per_execution=backend.resolve_steps_per_execution(config.steps_per_execution),
        devices=len(devices),
    )
    trained = usable_images(images - config.val_split, config.batch_size, len(devices))
    return RunSettings(config, tuple(devices), trained, config.val_split, count_steps(trained, config.batch_size),
                       tuple(milestones))
