"""The training state, and its checkpoints: saved whole or not at all, restored from the newest one that loads.

A checkpoint is a folder ``RUN_DIR/checkpoints/ckpt-<global step>/`` holding
``variables.npz`` (every variable of the model and the optimizer, the RNG
seeds of dropout and augmentation included, in a fixed order) and
``state.json`` (the loop's ``TrainState``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vggcifar import fsutil
from vggcifar.rundir import RunDir

KEEP_CHECKPOINTS = 2  # the newest and the one before it, in case the newest is damaged
#: Under several processes, how many of its newest checkpoints each offers when they agree on one.
AGREE_CHECKPOINTS = 8


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


def training_variables(train_model) -> list:
    """Everything a checkpoint holds, in a fixed order: the model's variables, then the optimizer's."""
    return list(train_model.variables) + list(train_model.optimizer.variables)


def save(run: RunDir, train_model, state: TrainState):
    """Weights, optimizer and RNG state, and the loop's state, as one folder
    that appears complete or not at all; older ones beyond KEEP_CHECKPOINTS go."""
    import keras

    target = run.checkpoint(state.global_step)
    variables = training_variables(train_model)
    with fsutil.atomic_dir(target) as tmp:
        arrays = {f"v{i:04d}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(variables)}
        with open(tmp / "variables.npz", "wb") as f:
            np.savez(f, **arrays)
        fsutil.write_json(tmp / "state.json", {**state.to_dict(), "variables": len(variables)})
    for old in run.list_checkpoints()[:-KEEP_CHECKPOINTS]:
        fsutil.remove_dir(old)  # never seen half removed
    return target


def load(run: RunDir, train_model, warn=print) -> TrainState | None:
    """Restore the newest checkpoint that loads whole; a damaged one is
    skipped for the one before it. None when the run has no checkpoint; a
    ValueError, before anything is changed, when it has some and none loads:
    resuming means continuing, never starting again unasked.

    Under several processes every process restores the same step: the newest
    one that every process has (``common_checkpoint``); a damaged one is then an
    error, as the others restore that step.
    """
    from vggcifar import backend

    fsutil.remove_stale_temps(run.checkpoints)
    variables = training_variables(train_model)
    shared = backend.several_processes()
    candidates = common_checkpoint(run, warn) if shared else run.list_checkpoints()
    tried = []
    for ckpt in reversed(candidates):
        try:
            meta = fsutil.read_json(ckpt / "state.json")
            with np.load(ckpt / "variables.npz") as z:
                arrays = [z[f"v{i:04d}"] for i in range(len(variables))]
            if meta.get("variables") != len(variables) or any(
                tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)
            ):
                raise ValueError("its variables do not match this run's model")
            state = {k: v for k, v in meta.items() if k != "variables"}
            state = TrainState(**state)
        except Exception as exc:  # damaged in any way: try the previous one
            if shared:
                raise ValueError(f"checkpoint {ckpt} is unusable ({exc}) and it is the newest one every process "
                                 "has: remove it on this host and start every process again with --resume") from None
            warn(f"warning: checkpoint {ckpt} is unusable ({exc}); trying an older one")
            tried.append(ckpt.name)
            continue
        for v, a in zip(variables, arrays):
            v.assign(a)
        return state
    if tried:
        raise ValueError(f"no checkpoint of {run.path} can be loaded (tried {', '.join(tried)}); nothing was "
                         f"changed: to start over on purpose, delete {run.checkpoints} and run again without "
                         "--resume, or choose another --run-dir")
    return None


def common_checkpoint(run: RunDir, warn=print) -> list:
    """Under several processes (a collective: every process calls it): this
    process's checkpoint of the newest step that every process has, as a list
    of one, or an empty list when they share none.

    A process lost mid-run can leave the others one checkpoint ahead of it (a
    step's checkpoint is written between two steps' collectives); this
    process's checkpoints past the common step are removed, as no other
    process can continue from them and a resumed run writes them again.
    """
    from vggcifar import backend

    steps = {}
    for ckpt in run.list_checkpoints():
        try:
            steps[int(fsutil.read_json(ckpt / "state.json")["global_step"])] = ckpt
        except (OSError, ValueError, KeyError, TypeError):  # damaged: not offered
            continue
    offered = sorted(steps)[-AGREE_CHECKPOINTS:]
    rows = backend.gather_ints(offered, AGREE_CHECKPOINTS)
    common = set(offered).intersection(*({int(s) for s in row if s >= 0} for row in rows))
    newest = max(common, default=None)
    for step in sorted(steps):
        if newest is None or step > newest:
            warn(f"checkpoint {steps[step]} is newer than the newest one every process has "
                 f"({'none' if newest is None else f'step {newest}'}): removed")
            fsutil.remove_dir(steps[step])
    return [] if newest is None else [steps[newest]]


def read_variables(checkpoint) -> list[np.ndarray]:
    """The arrays of one checkpoint folder, in their saved order."""
    with np.load(checkpoint / "variables.npz") as z:
        return [z[k] for k in sorted(z.files)]
