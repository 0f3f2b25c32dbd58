"""Epoch time and memory against the training set's size, through ``vggcifar.loop.fit``.

One fresh process per size (peak RSS is per process): synthetic uint8 images,
the spec recipe (or overrides), ``fit`` stopped after ``--steps`` steps. The
step times exclude ``--warmup`` steps; the epoch time is extrapolated from the
median step: steps an epoch x median step (evaluation not included).

    PYTHONPATH=src python benchmarks/scaling.py --sizes 5000,25000,50000 --steps 40
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time


def one_size(images: int, steps: int, warmup: int, batch_size: int | None) -> dict:
    import vggcifar  # noqa: F401  (names the default backend before keras loads)
    from vggcifar import backend, bench
    from vggcifar import loop as T
    from vggcifar.config import make_config
    from vggcifar.data import load_synthetic

    data = load_synthetic(train=images, test=256)
    rss_data = bench.peak_rss_mib()
    config = make_config("spec", epochs=1, batch_size=batch_size)
    times = []
    step = T.train_batch

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = step(*args, **kwargs)
        times.append(time.perf_counter() - t0)
        return out

    T.train_batch = timed
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            T.fit(config, data, run_dir, verbose=0, log=lambda *_: None, max_steps=steps)
        except T.TrainingStopped:
            pass
    per_step = statistics.median(times[warmup:])
    steps_per_epoch = math.ceil(images / config.batch_size)
    return {"images": images, "batch_size": config.batch_size, "timed_steps": len(times) - warmup,
            "median_step_seconds": per_step, "min_step_seconds": min(times[warmup:]),
            "max_step_seconds": max(times[warmup:]),
            "images_per_second": config.batch_size / per_step,
            "epoch_seconds_extrapolated": steps_per_epoch * per_step,
            "peak_rss_mib": bench.peak_rss_mib(), "rss_after_data_mib": rss_data,
            "environment": backend.environment()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="5000,25000,50000")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.steps, args.warmup, args.batch_size)))
        return 0
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    env = rows[0]["environment"]
    print(f"backend {env['backend']} on {env['device'].get('name')}; batch {rows[0]['batch_size']}, "
          f"{args.steps - args.warmup} timed steps per size")
    print(f"{'images':>7} {'s/step':>7} {'img/s':>6} {'epoch (extrapolated)':>21} {'peak RSS':>9} {'RSS after data':>15}")
    for r in rows:
        print(f"{r['images']:7d} {r['median_step_seconds']:7.3f} {r['images_per_second']:6.1f} "
              f"{r['epoch_seconds_extrapolated'] / 60:17.1f} min {r['peak_rss_mib']:6.0f} MiB "
              f"{r['rss_after_data_mib']:11.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
