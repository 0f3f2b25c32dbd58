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


class CallRows(np.ndarray):
    """The (k, b) rows of one call, as a view of its epoch's order: ``order``
    holds every row of the epoch in step order (one int32 array for the whole
    epoch, the short last batch included), ``first`` is the epoch's step the
    call starts at and ``stride`` the epoch's batch size (step s's rows start
    at ``order[s * stride]``). A runner that keeps the order on the device
    puts it there once an epoch; it reads a plain array's rows as their own order."""

    order: np.ndarray
    first: int
    stride: int

    @classmethod
    def of(cls, order: np.ndarray, first: int, stop: int, stride: int) -> "CallRows":
        """Steps ``first`` to ``stop`` (excluded) of an epoch whose rows, in step order, are ``order``."""
        start, end = first * stride, min(stop * stride, len(order))
        rows = order[start:end].reshape(stop - first, -1).view(cls)
        rows.order, rows.first, rows.stride = order, first, stride
        return rows

    def __array_finalize__(self, obj):
        self.order = getattr(obj, "order", None)
        self.first = getattr(obj, "first", 0)
        self.stride = getattr(obj, "stride", 0)


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
    runs (a ``CallRows``: a view of its epoch's ``epoch_order``). Calls never
    cross an epoch's end, end at multiples of ``per_call`` steps from the
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
            yield epoch, s, CallRows.of(order, s, stop, batch_size)
            s = stop
        epoch, step = epoch + 1, 0
