"""Training steps run K at a time in one call to the backend: the uint8 training set placed on the device once, each step's batch gathered, one-hot encoded and trained on inside the compiled call.

A runner's ``run(rows)`` takes a (K, B) array of training-set rows, one row of
it per step, and returns the K steps' losses and accuracies, read back to the
host once. The step is Keras' own (the model's loss with its label smoothing,
the optimizer's loss scaling and update), written once per backend because
each compiles a loop its own way:

- jax: one ``jax.jit`` step, the model, optimizer and RNG state donated to it,
  called K times without waiting: JAX dispatches asynchronously, so the device
  runs the K steps back to back while the host queues them, and the host waits
  once, for the K losses (as Keras' own ``steps_per_execution`` does on JAX).
  The epoch's order of rows is put on the device once an epoch (``CallRows``:
  the rows of a call know their epoch's order), and the step finds its batch
  in it from a position it carries from step to step, so a call sends nothing
  to the device; each step writes its loss and accuracy into a small record
  that the host reads once a call. On several devices (a keras.distribution)
  the same step runs with the set and the order on every device and each batch
  split among them by the distribution's data layout: XLA sums the gradients.
  A ``jax.lax.scan`` over the K steps in one call (``jax_loop="scan"``, kept
  to be measured) ran the spec network's step 5x slower at a sixteenth width
  and 19x slower at a quarter width on XLA's CPU backend;
- tensorflow: a ``tf.function`` whose loop over the K steps runs in the graph;
- torch: eager steps, K of them before the host reads a number (the GPU's queue
  stays full; on a CPU each step is synchronous anyway).

With K = 1 a runner is still one compiled call per step.
"""

from __future__ import annotations

import contextlib

import numpy as np

import keras

from vggcifar import backend
from vggcifar.build import inner_optimizer
from vggcifar.order import CallRows


def call_order(rows) -> tuple[np.ndarray, int, int]:
    """(the epoch's order, the call's first step in it, the stride) of a call's
    ``rows``: those a ``CallRows`` carries, or a plain (k, b) array's own rows
    as an order of k steps of b."""
    if isinstance(rows, CallRows) and rows.order is not None and rows.ndim == 2:
        return rows.order, rows.first, rows.stride
    rows = np.asarray(rows, np.int32)
    return rows.reshape(-1), 0, rows.shape[1]


#: Slots of the JAX runner's record of losses and accuracies: the most steps a
#: call takes without the step being compiled again (for a larger record).
#: Fixed, so that K steps a call and 1 run the same compiled step.
RECORD_STEPS = 128

#: How the JAX runner makes K steps: K calls of one compiled step, or one
#: compiled ``lax.scan`` over them (slower on XLA's CPU backend; see above).
JAX_LOOPS = ("calls", "scan")


def make_runner(train_model, x: np.ndarray, y: np.ndarray, num_classes: int, *, per_call: int = 1,
                jax_loop: str = "calls"):
    """The compiled K-step runner for the current backend; ``per_call`` is the
    most steps a call will run (more is allowed, at the cost of a recompile on JAX)."""
    name = keras.backend.backend()
    if name == "jax":
        return _JaxRunner(train_model, x, y, num_classes, per_call=per_call, loop=jax_loop)
    cls = {"tensorflow": _TensorFlowRunner, "torch": _TorchRunner}.get(name)
    if cls is None:
        raise ValueError(f"no compiled training step for the {name} backend; use jax, tensorflow or torch")
    return cls(train_model, x, y, num_classes)


@contextlib.contextmanager
def one_learning_rate(optimizer, iterations=None):
    """Inside, ``optimizer`` (or the one a loss-scale optimizer wraps) reads
    its schedule's value for the step ``iterations`` (its own by default) as
    a fixed tensor. Keras' optimizers read the learning rate once for every
    variable they decay, and a schedule with a warm-up is a cond each time: on
    TensorFlow a graph of its own (1.4 s of the 3.1 s that tracing vgg16-bn's
    step took). The same value, computed once a step."""
    inner = inner_optimizer(optimizer)
    schedule = inner._learning_rate
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        yield
        return
    inner._learning_rate = schedule(inner.iterations if iterations is None else iterations)
    try:
        yield
    finally:
        inner._learning_rate = schedule


class _JaxRunner:
    def __init__(self, train_model, x, y, num_classes, per_call=1, loop="calls"):
        import jax
        import jax.numpy as jnp

        if loop not in JAX_LOOPS:
            raise ValueError(f"Expected `loop` in {JAX_LOOPS}. Received: loop={loop!r}")
        self.model, self.loop = train_model, loop
        # The set goes to the device(s) once, as uint8: whole on each device.
        self.x, self.y = backend.to_device(x), backend.to_device(np.asarray(y, np.int32))
        self._metrics_state = [v.value for v in train_model.metrics_variables]
        model, optimizer = train_model, train_model.optimizer
        replicated = backend.replicated_sharding()
        inner = inner_optimizer(optimizer)
        (counter,) = [i for i, v in enumerate(optimizer.variables) if v is inner.iterations]

        def step(state, carry, order, x_all, y_all, metrics_state, *, batch, stride):
            trainable, non_trainable, optimizer_state = state
            position, slot, record = carry
            # The head of ``order`` is the position of the epoch's first call; its rows follow.
            rows = jax.lax.dynamic_slice_in_dim(order, 1 + position * stride, batch)
            xb, labels = x_all[rows], y_all[rows]
            shard = backend.batch_sharding(xb.ndim)
            if shard is not None:  # split among the devices as the data-parallel layout says
                xb = jax.lax.with_sharding_constraint(xb, shard)
                labels = jax.lax.with_sharding_constraint(labels, backend.batch_sharding(1))
            yb = jax.nn.one_hot(labels, num_classes, dtype="float32")
            grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
            (_, (loss, y_pred, non_trainable, _)), grads = grad_fn(
                trainable, non_trainable, metrics_state, xb, yb, None, training=True,
                optimizer_variables=optimizer_state)
            with one_learning_rate(optimizer, optimizer_state[counter]):
                trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            accuracy = jnp.mean((jnp.argmax(y_pred, axis=-1) == labels).astype("float32"))
            record = record.at[slot].set(jnp.stack([loss.astype("float32"), accuracy]))
            return (trainable, non_trainable, optimizer_state), (position + 1, slot + 1, record)

        def scan(state, carry, order, x_all, y_all, metrics_state, *, batch, stride, length):
            def body(both, _):
                return step(*both, order, x_all, y_all, metrics_state, batch=batch, stride=stride), None

            return jax.lax.scan(body, (state, carry), None, length=length)[0]

        shardings = None
        if replicated is not None:  # the state keeps its layout (as Keras' own train step does)
            shardings = (tuple([v.value.sharding for v in group] for group in self._groups()),
                         (replicated, replicated, replicated))
        statics = ("batch", "stride") if loop == "calls" else ("batch", "stride", "length")
        self._step = jax.jit(step if loop == "calls" else scan, static_argnames=statics, donate_argnums=0,
                             out_shardings=shardings)
        # Device-made values, no transfer: the head of an order, a zero, an empty record.
        self._start = jax.jit(lambda order: order[0])
        self._zero = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=replicated)()
        self._empty = jax.jit(lambda n: jnp.zeros((n, 2), jnp.float32), static_argnums=0, out_shardings=replicated)
        self._record = self._empty(max(RECORD_STEPS, per_call))
        self._order = self._order_host = None
        self._device_get = jax.device_get
        self._next_first = -1

    def _groups(self):
        model = self.model
        return model.trainable_variables, model.non_trainable_variables, model.optimizer.variables

    def _prepare(self, rows):
        """The call's arguments after the state: (carry, order on the device, statics, k)."""
        order, first, stride = call_order(rows)
        k, batch = rows.shape
        if order is not self._order_host or first != self._next_first:
            # A new epoch (or rows of their own): its order goes to the device once.
            head = np.concatenate([np.array([first], np.int32), np.asarray(order, np.int32)])
            self._order, self._order_host = backend.to_device(head), order
            self._position = self._start(self._order)
        if k > self._record.shape[0]:
            self._record = self._empty(k)
        self._next_first = first + k
        return (self._position, self._zero, self._record), {"batch": batch, "stride": stride}, k

    def lower(self, rows):
        """The compiled step's ``jax.stages.Lowered`` for a call of ``rows``
        (the program XLA compiles; its text and cost analysis), running nothing."""
        carry, statics, k = self._prepare(rows)
        self._next_first = -1
        if self.loop == "scan":
            statics["length"] = k
        return self._step.lower(self._state(), carry, self._order, self.x, self.y, self._metrics_state, **statics)

    def _state(self):
        return tuple([v.value for v in group] for group in self._groups())

    def run(self, rows):
        carry, statics, k = self._prepare(rows)
        state, args = self._state(), (self._order, self.x, self.y, self._metrics_state)
        if self.loop == "scan":
            state, carry = self._step(state, carry, *args, length=k, **statics)
        else:
            for _ in range(k):  # queued without waiting: the device runs them back to back
                state, carry = self._step(state, carry, *args, **statics)
        for group, values in zip(self._groups(), state):
            for variable, value in zip(group, values):
                variable.assign(value)
        self._position, _, self._record = carry
        # The host's one wait and one read, explicit: with JAX's transfer guard
        # for device-to-host set to "disallow", any other read would raise.
        record = self._device_get(self._record)[:k]
        return record[:, 0].astype(np.float64), record[:, 1].astype(np.float64)


class _TensorFlowRunner:
    def __init__(self, train_model, x, y, num_classes):
        import tensorflow as tf

        self.model = train_model
        self.x, self.y = tf.constant(x), tf.constant(np.asarray(y, np.int32))
        model, optimizer = train_model, train_model.optimizer

        def step(rows):
            labels = tf.gather(self.y, rows)
            xb = tf.gather(self.x, rows)
            yb = tf.one_hot(labels, num_classes, dtype="float32")
            with tf.GradientTape() as tape:
                y_pred = model(xb, training=True)
                loss = model.compute_loss(x=xb, y=yb, y_pred=y_pred, training=True)
                scaled = optimizer.scale_loss(loss)
            weights = model.trainable_weights
            with one_learning_rate(optimizer):
                optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
            accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), labels),
                                              "float32"))
            return tf.cast(loss, "float32"), accuracy

        def chunk(rows):
            k = tf.shape(rows)[0]
            losses = tf.TensorArray("float32", size=k)
            accuracies = tf.TensorArray("float32", size=k)
            for i in tf.range(k):
                loss, accuracy = step(rows[i])
                losses = losses.write(i, loss)
                accuracies = accuracies.write(i, accuracy)
            return losses.stack(), accuracies.stack()

        # As Keras compiles its own train step on this backend (XLA where it would).
        # Traced once: the steps a call and the batch (a short last one too) are
        # left open, as each trace of the step takes 0.5-3 s of Python.
        self._chunk = tf.function(chunk, jit_compile=bool(train_model.jit_compile),
                                  input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def run(self, rows):
        losses, accuracies = self._chunk(np.asarray(rows, np.int32))
        return np.asarray(losses, np.float64), np.asarray(accuracies, np.float64)


class _TorchRunner:
    def __init__(self, train_model, x, y, num_classes):
        import torch

        self.torch, self.model, self.num_classes = torch, train_model, num_classes
        # On Keras' device for this backend (the GPU where there is one).
        self.x = keras.ops.convert_to_tensor(x)
        self.y = keras.ops.convert_to_tensor(np.asarray(y, np.int64))

    def run(self, rows):
        torch, model = self.torch, self.model
        optimizer = model.optimizer
        rows = keras.ops.convert_to_tensor(np.asarray(rows, np.int64))
        losses, accuracies = [], []
        for step_rows in rows:
            labels = self.y[step_rows]
            xb = self.x[step_rows]
            yb = torch.nn.functional.one_hot(labels, self.num_classes).to(torch.float32)
            y_pred = model(xb, training=True)
            model.zero_grad()
            loss = model.compute_loss(x=xb, y=yb, y_pred=y_pred, training=True)
            optimizer.scale_loss(loss).backward()
            weights = model.trainable_weights[:]
            with torch.no_grad(), one_learning_rate(optimizer):
                optimizer.apply([v.value.grad for v in weights], weights)
            losses.append(loss.detach().float())
            accuracies.append((y_pred.detach().argmax(dim=-1) == labels).float().mean())
        # One read of the host: all K steps' numbers at once.
        return (torch.stack(losses).cpu().numpy().astype(np.float64),
                torch.stack(accuracies).cpu().numpy().astype(np.float64))
