"""The optimizer steps a run takes, and the short-run check: whether they are enough for a recipe to leave its warm-up and learn.

Computing only: ``short_run`` returns what it found and the fix as a dict
(metrics.json keeps it); ``vggcifar.report.short_run_message`` words it.
Importing this module imports no Keras backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vggcifar.config import TrainConfig

#: Fewer optimizer steps than this in a run: too short to learn. Measured on
#: 1,197 real training images (docs/recipes.md, "Calibration on real images"):
#: the learning recipes reached 69-83% test accuracy in 75-150 steps, their
#: training accuracy still climbing, and 95-99% in 285.
MIN_STEPS = 250
#: With batch norm, fewer steps an epoch than this: the moving statistics
#: (momentum 0.9: an average over about 10 steps) lag the weights by more than
#: an epoch, and the model evaluated after an epoch is not the one trained.
MIN_BN_STEPS_PER_EPOCH = 10
#: The smallest batch size the fix proposes.
MIN_FIX_BATCH = 8


@dataclass(frozen=True)
class StepBudget:
    """The optimizer steps of a run: per epoch, of warm-up, in all."""

    train_images: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    warmup_steps: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Steps an epoch takes: every image once, the last batch short (with
    several devices the loop may drop up to devices - 1 images of it)."""
    return math.ceil(train_images / batch_size)


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps of the cosine schedule's linear warm-up: ``warmup_epochs`` in
    steps, at most a fifth of the run; none for the other schedules."""
    if config.schedule != "cosine":
        return 0
    return min(int(round(config.warmup_epochs * steps_per_epoch)), config.epochs * steps_per_epoch // 5)


def step_budget(config: TrainConfig, train_images: int, *, batch_size: int | None = None,
                epochs: int | None = None) -> StepBudget:
    """``config``'s steps on ``train_images`` images (``batch_size`` and
    ``epochs`` replace the config's, to try a fix)."""
    import dataclasses

    batch_size = batch_size or config.batch_size
    epochs = epochs or config.epochs
    spe = steps_per_epoch(train_images, batch_size)
    warmup = warmup_steps(dataclasses.replace(config, epochs=epochs), spe)
    return StepBudget(train_images, batch_size, epochs, spe, warmup)


def _short(config: TrainConfig, budget: StepBudget) -> list[str]:
    """What is too short about ``budget``: "steps", "bn_steps_per_epoch"."""
    found = []
    if budget.steps < MIN_STEPS:
        found.append("steps")
    if config.batch_norm and budget.steps_per_epoch < MIN_BN_STEPS_PER_EPOCH:
        found.append("bn_steps_per_epoch")
    return found


def _fixes(config: TrainConfig, train_images: int, budget: StepBudget, reasons: list[str]) -> list[dict]:
    """Ways to make the run long enough: a smaller batch size alone (the
    largest halving of it that is enough, not below MIN_FIX_BATCH), more
    epochs alone (not when batch norm has too few steps an epoch: epochs do
    not change that), else both together."""
    def budget_at(batch: int) -> StepBudget:
        return step_budget(config, train_images, batch_size=batch)

    halvings = []
    batch = config.batch_size // 2
    while batch >= MIN_FIX_BATCH:
        halvings.append(batch)
        batch //= 2
    fixes = [{"batch_size": b} for b in halvings if not _short(config, budget_at(b))][:1]
    if "bn_steps_per_epoch" not in reasons:
        fixes.append({"epochs": math.ceil(MIN_STEPS / budget.steps_per_epoch)})
    if not fixes:
        enough_per_epoch = [b for b in halvings if "bn_steps_per_epoch" not in _short(config, budget_at(b))][:1]
        fixes += [{"batch_size": b, "epochs": math.ceil(MIN_STEPS / budget_at(b).steps_per_epoch)}
                  for b in enough_per_epoch]
    return fixes


def short_run(config: TrainConfig, train_images: int) -> dict | None:
    """None when the run has steps enough; else what it has, what is short
    (``reasons``), the thresholds, and the ``fixes`` (each a dict of the
    options to change: batch_size, epochs; empty when only more images help)."""
    budget = step_budget(config, train_images)
    reasons = _short(config, budget)
    if not reasons:
        return None
    return {
        "reasons": reasons,
        "steps": budget.steps,
        "steps_per_epoch": budget.steps_per_epoch,
        "warmup_steps": budget.warmup_steps,
        "train_images": train_images,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "min_steps": MIN_STEPS,
        "min_bn_steps_per_epoch": MIN_BN_STEPS_PER_EPOCH,
        "fixes": _fixes(config, train_images, budget, reasons),
    }
