"""The order in which a run visits its training images: each epoch's shuffle, its batches, and the calls that group them.

A function of (seed, epoch) alone, so a run resumed from any checkpoint,
mid-epoch included, passes through the same batches as an uninterrupted one;
the bench and the benchmarks draw their batches here too. Plain numpy:
importing this module imports no Keras.
"""

from __future__ import annotations

import numpy as np

from vggcifar.budget import steps_per_epoch as count_steps


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of one epoch: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def batch_indices(perm: np.ndarray, step: int, batch_size: int) -> np.ndarray:
    """Rows of step ``step`` of an epoch shuffled by ``perm``, sorted so that
    the gather from the uint8 set reads memory in order (the batch is the same
    set of images, and the step's mean loss does not depend on their order)."""
    return np.sort(perm[step * batch_size:(step + 1) * batch_size])


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
    runs. Calls never cross an epoch's end, end at multiples of ``per_call``
    steps from the epoch's start (so a resumed run makes the same calls), and a
    short last batch is a call of its own."""
    steps_per_epoch = count_steps(images if used is None else used, batch_size)
    pending: list[np.ndarray] = []
    first = None
    for e, s, idx in batches(seed, images, batch_size, used=used, epoch=epoch, step=step):
        if pending and len(idx) != len(pending[0]):  # the short last batch: a call of its own
            yield e, first, np.stack(pending)
            pending = []
        if not pending:
            first = s
        pending.append(idx)
        if s + 1 == steps_per_epoch or (s + 1) % per_call == 0:
            yield e, first, np.stack(pending)
            pending = []
