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
  A ``jax.lax.scan`` over the K steps in one call (``jax_loop="scan"``, kept
  to be measured) ran the spec network's step 5x slower at a sixteenth width
  and 19x slower at a quarter width on XLA's CPU backend;
- tensorflow: a ``tf.function`` whose loop over the K steps runs in the graph;
- torch: eager steps, K of them before the host reads a number (the GPU's queue
  stays full; on a CPU each step is synchronous anyway).

With K = 1 a runner is still one compiled call per step. Data-parallel training
(several devices or processes) goes through Keras' ``train_on_batch``, which
places each batch with the distribution's layout: ``BatchRunner``, one step a call.
"""

from __future__ import annotations

import numpy as np

import keras


class BatchRunner:
    """One step a call through ``train_on_batch``: the batch gathered on the
    host, placed by Keras (sharded along the batch under a keras.distribution);
    each process hands it only its own rows (``process_rows``)."""

    def __init__(self, train_model, x: np.ndarray, y: np.ndarray, num_classes: int, process_rows=None):
        self.train_model, self.x, self.y, self.num_classes = train_model, x, y, num_classes
        self.process_rows = process_rows or (lambda rows: rows)

    def run(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses, accuracies = [], []
        for step_rows in rows:
            mine = self.process_rows(step_rows)
            logs = self.train_model.train_on_batch(self.x[mine], one_hot(self.y[mine], self.num_classes),
                                                   return_dict=True)
            losses.append(float(logs["loss"]))
            accuracies.append(float(logs["accuracy"]))
        return np.asarray(losses, np.float64), np.asarray(accuracies, np.float64)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


#: How the JAX runner makes K steps: K calls of one compiled step, or one
#: compiled ``lax.scan`` over them (slower on XLA's CPU backend; see above).
JAX_LOOPS = ("calls", "scan")


def make_runner(train_model, x: np.ndarray, y: np.ndarray, num_classes: int, *, jax_loop: str = "calls"):
    """The compiled K-step runner for the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _JaxRunner(train_model, x, y, num_classes, loop=jax_loop)
    cls = {"tensorflow": _TensorFlowRunner, "torch": _TorchRunner}.get(backend)
    if cls is None:
        raise ValueError(f"no compiled training step for the {backend} backend; use jax, tensorflow or torch")
    return cls(train_model, x, y, num_classes)


class _JaxRunner:
    def __init__(self, train_model, x, y, num_classes, loop="calls"):
        import jax
        import jax.numpy as jnp

        if loop not in JAX_LOOPS:
            raise ValueError(f"Expected `loop` in {JAX_LOOPS}. Received: loop={loop!r}")
        self.model, self.loop = train_model, loop
        self.x, self.y = jax.device_put(x), jax.device_put(np.asarray(y, np.int32))
        self._metrics_state = [v.value for v in train_model.metrics_variables]
        model, optimizer = train_model, train_model.optimizer

        def step(state, rows, x_all, y_all, metrics_state):
            trainable, non_trainable, optimizer_state = state
            labels = y_all[rows]
            xb = x_all[rows]
            yb = jax.nn.one_hot(labels, num_classes, dtype="float32")
            grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
            (_, (loss, y_pred, non_trainable, _)), grads = grad_fn(
                trainable, non_trainable, metrics_state, xb, yb, None, training=True,
                optimizer_variables=optimizer_state)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            accuracy = jnp.mean((jnp.argmax(y_pred, axis=-1) == labels).astype("float32"))
            return (trainable, non_trainable, optimizer_state), (loss.astype("float32"), accuracy)

        def scan(state, rows, x_all, y_all, metrics_state):
            return jax.lax.scan(lambda s, r: step(s, r, x_all, y_all, metrics_state), state, rows)

        self._step = jax.jit(step if loop == "calls" else scan, donate_argnums=0)
        self._device_get = jax.device_get

    def run(self, rows):
        model = self.model
        groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
        state = tuple([v.value for v in group] for group in groups)
        rows = np.asarray(rows, np.int32)
        if self.loop == "scan":
            state, (losses, accuracies) = self._step(state, rows, self.x, self.y, self._metrics_state)
        else:
            losses, accuracies = [], []
            for step_rows in rows:  # queued without waiting: the device runs them back to back
                state, (loss, accuracy) = self._step(state, step_rows, self.x, self.y, self._metrics_state)
                losses.append(loss)
                accuracies.append(accuracy)
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)
        losses, accuracies = self._device_get((losses, accuracies))  # the host's one wait
        return np.asarray(losses, np.float64), np.asarray(accuracies, np.float64)


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
        self._chunk = tf.function(chunk, jit_compile=bool(train_model.jit_compile), reduce_retracing=True)

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
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in weights], weights)
            losses.append(loss.detach().float())
            accuracies.append((y_pred.detach().argmax(dim=-1) == labels).float().mean())
        # One read of the host: all K steps' numbers at once.
        return (torch.stack(losses).cpu().numpy().astype(np.float64),
                torch.stack(accuracies).cpu().numpy().astype(np.float64))
