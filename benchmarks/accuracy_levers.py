"""Short-budget accuracy levers, each variant trained once as a run trains it, and measured four ways from that one run: the weights and an EMA of them, each without and with flip test-time augmentation.

A variant is a recipe with ``--set``-style overrides (``name:key=value,key=value``).
Each is built and trained exactly as ``vggcifar train`` builds and trains it
(``vggcifar.settings.resolve``, ``vggcifar.build.build_training``,
``vggcifar.loop.make_runner``, ``vggcifar.order.chunks``: the same
initialisation, optimizer, schedule, augmentation and batches, one step a
call), without checkpoints. Along the way it keeps an exponential moving
average of the trainable weights (``--ema``: its momentum a step, as Keras'
``use_ema``), and after every epoch it gives the validation accuracy of the
weights and of the average; at the end, the test accuracy of both, without
and with flip TTA (``vggcifar.inference.predict_tta``). Prints one JSON line
per variant, and a table.

    PYTHONPATH=src python benchmarks/accuracy_levers.py --data /tmp/hard.tar.gz --recipe vgg16-bn \\
        --batch-size 64 --epochs 15 --val-split 200 --seeds 0,1 \\
        today: warmup1:warmup_epochs=1 lr2x:lr=0.05
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def parse_variant(text: str) -> tuple[str, dict]:
    """"name:key=value,key=value" as (name, {key: value}), values read as `vggcifar train --set` reads them."""
    from vggcifar.options import set_overrides

    name, _, spec = text.partition(":")
    return name, set_overrides([item for item in spec.split(",") if item])


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


class WeightAverage:
    """An EMA of the trainable weights, kept on the host: average = m * average
    + (1 - m) * weights after every step (the first step copies), as Keras'
    optimizer ``use_ema`` keeps it."""

    def __init__(self, variables, momentum: float):
        self.variables, self.momentum, self.average = variables, momentum, None

    def update(self) -> None:
        import keras

        values = [keras.ops.convert_to_numpy(v.value).astype(np.float32) for v in self.variables]
        if self.average is None:
            self.average = values
            return
        m = self.momentum
        for a, v in zip(self.average, values):
            a *= m
            a += (1 - m) * v

    def swapped(self):
        """A context in which the variables hold the average."""
        import contextlib

        import keras

        @contextlib.contextmanager
        def swap():
            saved = [keras.ops.convert_to_numpy(v.value) for v in self.variables]
            for v, a in zip(self.variables, self.average):
                v.assign(a)
            try:
                yield
            finally:
                for v, s in zip(self.variables, saved):
                    v.assign(s)

        return swap()


def run_variant(recipe: str, overrides: dict, data, *, batch_size: int, epochs: int, val_split: int, seed: int,
                precision: str, ema: float) -> dict:
    import keras

    from vggcifar import build, loop, order, settings
    from vggcifar.config import make_config
    from vggcifar.inference import predict_probs, predict_tta

    keras.backend.clear_session()
    config = make_config(recipe, batch_size=batch_size, epochs=epochs, val_split=val_split, seed=seed,
                         precision=precision, **overrides)
    run = settings.resolve(config, len(data.x_train))
    config, spe = run.config, run.steps_per_epoch
    x, y, x_val, y_val = loop.split_validation(config, data)
    model, train_model = build.build_training(config, data.num_classes, spe, x)
    runner = loop.make_runner(train_model, x, y, data.num_classes)
    average = WeightAverage(model.trainable_variables, ema)
    history = []
    seconds = 0.0
    stream = order.chunks(config.seed, len(x), config.batch_size, 1)
    for epoch in range(config.epochs):
        for _ in range(spe):
            _, _, rows = next(stream)
            t0 = time.perf_counter()
            losses, _ = runner.run(rows)
            seconds += time.perf_counter() - t0
            if not np.all(np.isfinite(losses)):
                return {"recipe": recipe, "overrides": overrides, "seed": seed, "diverged": epoch + 1}
            average.update()
        row = {"epoch": epoch + 1, "val": accuracy(predict_probs(model, x_val), y_val)}
        with average.swapped():
            row["val_ema"] = accuracy(predict_probs(model, x_val), y_val)
        history.append(row)
        print(f"  epoch {epoch + 1}: val {100 * row['val']:.1f}%, ema {100 * row['val_ema']:.1f}%", flush=True)
    test = {"plain": accuracy(predict_tta(model, data.x_test, "none"), data.y_test),
            "flip": accuracy(predict_tta(model, data.x_test, "flip"), data.y_test)}
    with average.swapped():
        test["ema"] = accuracy(predict_tta(model, data.x_test, "none"), data.y_test)
        test["ema_flip"] = accuracy(predict_tta(model, data.x_test, "flip"), data.y_test)
    return {"recipe": recipe, "overrides": overrides, "seed": seed, "precision": config.precision,
            "lr": config.lr, "ema": ema, "test": test, "history": history, "train_seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", help="name:key=value,key=value (name: alone is the recipe as it is)")
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", default="spec-he")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--val-split", type=int, default=200)
    p.add_argument("--seeds", default="0")
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--ema", type=float, default=0.99, help="the weight average's momentum a step")
    p.add_argument("--out", help="append each variant's JSON line to this file")
    args = p.parse_args()

    from vggcifar.data import load_source

    data = load_source({"data": args.data})
    results = []
    for text in args.variants:
        name, overrides = parse_variant(text)
        for seed in (int(s) for s in args.seeds.split(",")):
            print(f"{args.recipe} {name} seed {seed} {overrides}", flush=True)
            r = {"name": name, **run_variant(args.recipe, overrides, data, batch_size=args.batch_size,
                                             epochs=args.epochs, val_split=args.val_split, seed=seed,
                                             precision=args.precision, ema=args.ema)}
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"| variant | seed | test | flip | ema | ema + flip |\n|---|---|---|---|---|---|")
    for r in results:
        t = r.get("test")
        cells = ["diverged"] * 4 if t is None else [f"{100 * t[k]:.2f}" for k in ("plain", "flip", "ema", "ema_flip")]
        print(f"| {r['name']} | {r['seed']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
