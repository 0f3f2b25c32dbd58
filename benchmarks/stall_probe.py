"""Why a recipe sits at chance: each layer's activation and gradient scales at initialisation and after the first steps.

Builds a recipe's training model exactly as a run does (``vggcifar.settings.resolve``, ``vggcifar.build.build_training``:
its initialisers, optimizer, schedule, loss and augmentation), then trains it step by
step through the run's own runner on the run's own batches, and at each probe step
measures, on one fixed batch of training images:

- per layer (each conv's and dense layer's relu, and the logits), in inference mode:
  ``rms`` (root mean square of the activations), ``sim`` (mean cosine similarity
  between two different images' activations: 1 means every image looks the same to
  the layers above), ``dead`` (share of units zero for every image);
- per kernel, in training mode: ``grad`` (rms of the loss's gradient) and
  ``grad/w`` (it over the kernel's rms: how fast SGD can move that layer);
- the loss and the validation accuracy.

    PYTHONPATH=src python benchmarks/stall_probe.py --data /tmp/hard.tar.gz --recipe spec-he \\
        --batch-size 64 --epochs 15 --val-split 200 --probe 0,10,19,38,57 --json probe.json

``--set KEY=VALUE`` changes the config as for ``vggcifar train``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def gradients(train_model, x, y):
    """(loss, gradients of the training loss w.r.t. the trainable weights) on
    one batch in training mode, whatever the backend."""
    import keras

    backend = keras.backend.backend()
    weights = train_model.trainable_weights
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = train_model(x, training=True)
            loss = train_model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, weights)
    elif backend == "torch":
        y_pred = train_model(x, training=True)
        train_model.zero_grad()
        loss = train_model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        loss.backward()
        grads = [w.value.grad for w in weights]
    elif backend == "jax":
        import jax

        trainable = [w.value for w in weights]
        non_trainable = [w.value for w in train_model.non_trainable_variables]
        metrics = [w.value for w in train_model.metrics_variables]

        def f(tv):
            loss, _ = train_model.compute_loss_and_updates(tv, non_trainable, metrics, x, y, None, training=True)
            return loss

        loss, grads = jax.value_and_grad(f)(trainable)
    else:
        raise ValueError(f"no gradient for the {backend} backend; use jax, tensorflow or torch")
    return float(keras.ops.convert_to_numpy(loss)), [keras.ops.convert_to_numpy(g) for g in grads]


def rms(a) -> float:
    a = np.asarray(a, np.float64)
    return float(np.sqrt(np.mean(a * a)))


def mean_cosine(a: np.ndarray) -> float:
    """Mean cosine similarity between the rows of ``a`` (images), self-pairs left out."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    u = a / np.where(norms > 0, norms, 1)
    s = u @ u.T
    n = len(a)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def probe(model, train_model, x, y_onehot, x_val, y_val, layers: bool = True) -> dict:
    import keras

    from vggcifar.inference import predict_probs

    val = float((predict_probs(model, x_val).argmax(1) == y_val).mean()) if len(x_val) else None
    if not layers:
        return {"loss": None, "val_accuracy": val, "layers": [], "kernels": []}

    names = [layer.name for layer in model.layers if "relu" in layer.name or layer.name == "predictions"]
    taps = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = taps.predict_on_batch(x)
    layers = []
    for name, a in zip(names, outs):
        a = np.asarray(a, np.float32)
        units = a.reshape(len(a), -1)  # whatever the layout: a unit is one position of one channel
        layers.append({"layer": name, "rms": rms(a), "sim": mean_cosine(a),
                       "dead": float(np.mean(np.all(units <= 0, axis=0))) if name != "predictions" else 0.0})
    loss, grads = gradients(train_model, x, y_onehot)
    kernels = []
    for w, g in zip(train_model.trainable_weights, grads):
        if w.path.endswith("kernel"):
            wv = keras.ops.convert_to_numpy(w.value)
            w_rms = rms(wv)
            kernels.append({"kernel": w.path.split("/")[-2], "grad": rms(g),
                            "grad/w": rms(g) / w_rms if w_rms > 0 else None})
    return {"loss": loss, "val_accuracy": val, "layers": layers, "kernels": kernels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a CIFAR archive (benchmarks/digits.py writes one)")
    p.add_argument("--recipe", default="spec-he")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--val-split", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="float32")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--probe", default="0,10,19,38", help="steps after which to probe (0: at initialisation)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--accuracy-only", action="store_true", help="only the validation accuracy at each probe")
    args = p.parse_args()

    from vggcifar import build, loop, order, settings
    from vggcifar.config import make_config
    from vggcifar.data import load_source
    from vggcifar.options import set_overrides

    data = load_source({"data": args.data})
    config = make_config(args.recipe, batch_size=args.batch_size, epochs=args.epochs, val_split=args.val_split,
                         seed=args.seed, precision=args.precision, **set_overrides(args.set))
    run = settings.resolve(config, len(data.x_train))
    config = run.config
    x, y, x_val, y_val = loop.split_validation(config, data)
    model, train_model = build.build_training(config, data.num_classes, run.steps_per_epoch, x)
    runner = loop.make_runner(train_model, x, y, data.num_classes)
    rows = np.linspace(0, len(x) - 1, 64).astype(np.int64)  # one fixed probe batch
    xb, yb = x[rows], np.eye(data.num_classes, dtype=np.float32)[y[rows]]
    points = sorted(int(s) for s in args.probe.split(","))
    stream = order.chunks(config.seed, len(x), config.batch_size, 1)
    results, done = [], 0
    for point in points:
        while done < point:
            _, _, r = next(stream)
            runner.run(r)
            done += 1
        r = probe(model, train_model, xb, yb, x_val, y_val, layers=not args.accuracy_only)
        r["step"] = point
        r["lr"] = build.current_lr(train_model.optimizer)
        results.append(r)
        loss = "" if r["loss"] is None else f"loss {r['loss']:.4f}, "
        print(f"step {point}: {loss}val accuracy {r['val_accuracy']:.3f}, lr {r['lr']:.5f}", flush=True)
        if args.accuracy_only:
            continue
        print(f"  {'layer':<16}{'rms':>10}{'sim':>8}{'dead':>7}   {'kernel':<14}{'grad':>10}{'grad/w':>10}")
        for layer, kernel in zip(r["layers"], r["kernels"]):
            print(f"  {layer['layer']:<16}{layer['rms']:>10.4g}{layer['sim']:>8.3f}{layer['dead']:>7.2f}   "
                  f"{kernel['kernel']:<14}{kernel['grad']:>10.3g}"
                  + ("         —" if kernel["grad/w"] is None else f"{kernel['grad/w']:>10.3g}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config.to_dict(), "probes": results}, f, indent=1)


if __name__ == "__main__":
    main()
