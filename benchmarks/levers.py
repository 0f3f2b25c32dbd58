"""Speed levers of the training path, timed against each other in one process.

Each variant is the training path (``vggcifar.bench.measure_training``'s
steps: build_training, make_runner, chunks) with some config values changed. The variants' timed windows are interleaved (A B C A B C ...), so
that a slow patch of a shared machine hits all of them alike; the table gives
each variant's median images/s, min and max, and its ratio to the first.

    PYTHONPATH=src python benchmarks/levers.py --batch-size 64 \\
        explicit:padding=explicit same:padding=same \\
        same-cf:padding=same,data_format=channels_first

A value ``threads=N`` sets torch's intra-op threads for that variant's steps
(torch backend only); ``jit_compile=1`` compiles the training step with XLA
(or torch.compile); ``steps_per_execution=K`` runs K steps a call;
``train_on_batch=1`` steps through Keras' ``train_on_batch`` instead; ``jax_loop=scan`` makes the K steps one compiled
``lax.scan`` instead of K calls of one compiled step (jax backend only).
``plain_pytorch=1`` is not our path at all: VGG-16 written directly in PyTorch
(``torch.nn``, NCHW, ``channels_last=1`` for NHWC memory), the same uint8
batches scaled per step, SGD at the spec's lr, one ``loss.backward()`` and
``opt.step()`` a step: what a PyTorch user writes by hand, timed in the same
windows as the Keras variants (it needs torch installed, whatever the backend).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time



class BatchRunner:
    """Keras' own ``train_on_batch``, one step a call: the batch gathered on
    the host and handed to Keras (the loop this project's runners replaced)."""

    def __init__(self, train_model, x, y, num_classes: int):
        self.train_model, self.x, self.y, self.num_classes = train_model, x, y, num_classes

    def run(self, rows):
        import numpy as np

        losses, accuracies = [], []
        for step_rows in np.asarray(rows):
            labels = np.zeros((len(step_rows), self.num_classes), np.float32)
            labels[np.arange(len(step_rows)), self.y[step_rows]] = 1.0
            logs = self.train_model.train_on_batch(self.x[step_rows], labels, return_dict=True)
            losses.append(float(logs["loss"]))
            accuracies.append(float(logs["accuracy"]))
        return np.asarray(losses, np.float64), np.asarray(accuracies, np.float64)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    values = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        values[key] = value
    return name, values


class PlainPyTorch:
    """VGG-16 for CIFAR written directly in PyTorch, and its training step."""

    LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

    def __init__(self, batch_size: int, num_classes: int, channels_last: bool):
        import torch
        from torch import nn

        layers, cin = [], 3
        for v in self.LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        layers += [nn.Flatten(), nn.Linear(512, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 4096),
                   nn.ReLU(inplace=True), nn.Linear(4096, num_classes)]
        self.torch = torch
        self.model = nn.Sequential(*layers)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.loss = nn.CrossEntropyLoss()

    def step(self, images, labels) -> None:
        torch = self.torch
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
        x = x.contiguous(memory_format=self.memory_format)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), torch.from_numpy(labels.astype("int64")))
        loss.backward()
        self.opt.step()
        loss.item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help="NAME:key=value,key=value (config overrides, threads=N)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per window")
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--dense-units", type=int, default=None, help="units of the hidden dense layers (default: the spec's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import vggcifar  # noqa: F401  (names the default backend before keras loads)
    import keras

    from vggcifar import backend, bench
    from vggcifar import steps as steps_module
    from vggcifar import order as T
    from vggcifar.build import build_training
    from vggcifar.config import make_config
    from vggcifar.data import load_synthetic

    data = load_synthetic(train=args.images, test=1)
    x, y = data.x_train, data.y_train
    runs = []
    for text in args.variants:
        name, values = parse_variant(text)
        if values.pop("plain_pytorch", 0):
            runs.append({"name": name, "plain": PlainPyTorch(args.batch_size, data.num_classes,
                                                             bool(values.pop("channels_last", 0))),
                         "config": make_config("spec", batch_size=args.batch_size), "threads": None,
                         "perm": T.epoch_permutation(0, 0, len(x)), "step": 0, "rates": [], "cpu": []})
            continue
        threads = values.pop("threads", None)
        jit = bool(values.pop("jit_compile", 0))
        per_batch = bool(values.pop("train_on_batch", 0))
        jax_loop = values.pop("jax_loop", "calls")
        config = make_config("spec", **{"batch_size": args.batch_size, "width": args.width,
                                        "dense_units": args.dense_units, **values})
        _, train_model = build_training(config, data.num_classes, math.ceil(len(x) / config.batch_size), x)
        if jit:  # the same step, compiled (torch.compile on torch, XLA on tensorflow and jax)
            train_model.compile(optimizer=train_model.optimizer, loss=train_model.loss, metrics=["accuracy"],
                                jit_compile=True)
        per_call = backend.resolve_steps_per_execution(config.steps_per_execution)
        runner = (BatchRunner(train_model, x, y, data.num_classes) if per_batch
                  else steps_module.make_runner(train_model, x, y, data.num_classes, per_call=per_call,
                                                jax_loop=jax_loop))
        runs.append({"name": name, "config": config, "threads": threads, "runner": runner,
                     "chunks": T.chunks(config.seed, len(x), config.batch_size, per_call), "rates": [], "cpu": []})

    def steps(run, k):
        if run["threads"] is not None:
            import torch

            torch.set_num_threads(run["threads"])
        images = done = 0
        while done < k:  # whole calls of the variant's steps_per_execution
            if "plain" in run:
                bs = run["config"].batch_size
                idx = T.batch_indices(run["perm"], run["step"] % (len(x) // bs), bs)
                run["plain"].step(x[idx], y[idx])
                run["step"] += 1
                done, images = done + 1, images + len(idx)
                continue
            _, _, rows = next(run["chunks"])
            run["runner"].run(rows)
            done, images = done + len(rows), images + rows.size
        return images

    default_threads = None
    if keras.backend.backend() == "torch":
        import torch

        default_threads = torch.get_num_threads()
    for run in runs:
        steps(run, args.warmup)
    for _ in range(args.windows):
        for run in runs:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            images = steps(run, args.steps)
            dt = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            run["rates"].append(images / dt)
            run["cpu"].append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / dt)
            if default_threads is not None:
                torch.set_num_threads(default_threads)
    env = backend.environment()
    first = statistics.median(runs[0]["rates"])
    rows = []
    for run in runs:
        s = bench.spread(run["rates"])
        rows.append({"variant": run["name"], **s, "ratio": s["median"] / first,
                     "cpu_per_wall": statistics.median(run["cpu"])})
    if args.json:
        print(json.dumps({"environment": env, "batch_size": args.batch_size, "rows": rows}))
        return 0
    dev = env["device"]
    print(f"backend {env['backend']} on {dev.get('name')}, batch {args.batch_size}, "
          f"{args.windows} interleaved windows of {args.steps} steps; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    print(f"{'variant':24} {'img/s':>7} {'min':>7} {'max':>7} {'ratio':>6} {'cpu/wall':>8}")
    for r in rows:
        print(f"{r['variant']:24} {r['median']:7.1f} {r['min']:7.1f} {r['max']:7.1f} {r['ratio']:6.2f} "
              f"{r['cpu_per_wall']:8.2f}")
    print(f"peak RSS of the process {bench.peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
