"""XLA's cost analysis of the compiled training step, per trained image, against the model's own count.

The step is compiled (not run) on JAX for one recipe, precision and batch size,
at full width unless told otherwise; XLA's FLOPs and bytes accessed are divided
by the batch and set beside ``vggcifar.bench.flops`` x 3 (forward, input
gradients, kernel gradients).

    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/step_cost.py --recipe spec --precision float32 --batch-size 32
    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/step_cost.py --recipe vgg16-bn --precision mixed_bfloat16 \\
        --batch-size 256

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="spec")
    p.add_argument("--precision", default="float32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--dense-units", type=int, default=None)
    args = p.parse_args(argv)

    import vggcifar  # noqa: F401  (names the default backend before keras loads)
    import keras

    from vggcifar import bench, loop
    from vggcifar.build import build_training
    from vggcifar.config import make_config
    from vggcifar.data import load_synthetic
    from vggcifar.order import chunks

    if keras.backend.backend() != "jax":
        raise SystemExit("XLA's cost analysis needs KERAS_BACKEND=jax")
    bs = args.batch_size
    data = load_synthetic(train=2 * bs, test=1, seed=0)
    config = make_config(args.recipe, batch_size=bs, val_split=0, precision=args.precision, epochs=1,
                         width=args.width, dense_units=args.dense_units)
    model, train_model = build_training(config, data.num_classes, 2)
    runner = loop.make_runner(train_model, data.x_train, data.y_train, data.num_classes)
    cost = bench.step_cost(runner, next(chunks(config.seed, 2 * bs, bs, 1))[2])
    model_flops = bench.TRAIN_FORWARD_PASSES * bench.flops(model)
    print(json.dumps({"recipe": args.recipe, "precision": config.precision, "batch_size": bs, "width": config.width,
                      "model_gflop_per_image": model_flops / 1e9,
                      "xla_gflop_per_image": cost["flops_per_image"] / 1e9,
                      "xla_share": cost["flops_per_image"] / model_flops,
                      "xla_mbytes_per_image": cost["bytes_per_image"] / 1e6,
                      "xla_flop_per_byte": cost["flops_per_image"] / cost["bytes_per_image"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
