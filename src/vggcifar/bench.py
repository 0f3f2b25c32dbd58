"""Throughput of the training path, of inference, and of the spec's plain usage, in one process.

Everything is measured on synthetic uint8 images of CIFAR's shape, after a
warm-up that is not timed (graph building, allocator and kernel selection).
Each figure is the median of several timed windows, with their min and max:
the machine may be shared, so compare ratios measured in one run.

The training figure goes through the training path's own functions (the
settings resolved by vggcifar.settings, vggcifar.build's model, vggcifar.order's
calls, vggcifar.loop's runner): what is measured is what ``vggcifar train`` runs. The baseline is the spec's
plain usage on the same backend and device: float32 images scaled up front,
the ZeroPadding2D model, ``model.fit`` with its defaults (shuffle, one
``fit`` call, the same optimizer and batch size).

FLOPs are counted from the model's layers (multiply-adds of convolutions and
dense layers, 2 FLOPs each); a trained image costs about 3 forward passes
(forward, gradient with respect to the inputs, gradient with respect to the
weights). The machine's fp32 peak is measured in the same run as the best of
repeated square float32 matrix products through ``keras.ops.matmul``, that is
through the backend's own library, on the device the model runs on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import keras

from vggcifar import backend
from vggcifar.inference import INFERENCE_BATCH

#: Work of one training step per forward pass: the forward pass, the
#: gradient with respect to each layer's inputs, and with respect to its
#: weights, each about one forward pass of multiply-adds.
TRAIN_FORWARD_PASSES = 3


@dataclass(frozen=True)
class BenchPlan:
    """How much to time. Steps are optimizer steps; windows are timed apart."""

    warmup_steps: int = 3  # untimed: graph build, allocator and kernel selection
    windows: int = 7  # timed windows; the figure is their median
    steps_per_window: int = 6  # training steps in one window
    predict_batches_per_window: int = 4  # inference batches in one window
    baseline: bool = True  # also time the spec's plain usage
    images: int = 50000  # synthetic training images held in memory, as many as CIFAR-10's

    def __post_init__(self):
        for name in ("warmup_steps", "windows", "steps_per_window", "predict_batches_per_window", "images"):
            value = getattr(self, name)
            minimum = 0 if name == "warmup_steps" else 1
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")

    @property
    def timed_steps(self) -> int:
        return self.windows * self.steps_per_window


FULL = BenchPlan()
QUICK = BenchPlan(warmup_steps=2, windows=5, steps_per_window=2, predict_batches_per_window=2, images=5000)

#: On an accelerator every timed window holds at least this many images, in
#: training and in inference: 0.3-1 s of work at the 15,000-50,000 img/s one
#: H100 is expected to reach, against the milliseconds a window's start and its
#: final read cost the host. (On a CPU a step alone takes a few hundred ms.)
ACCELERATOR_WINDOW_IMAGES = 16384


def plan_for_device(plan: BenchPlan, kind: str, batch_size: int) -> BenchPlan:
    """``plan`` on a device of ``kind`` ("cpu", "gpu", ...): on an accelerator,
    windows of at least ACCELERATOR_WINDOW_IMAGES images and a warm-up of at
    least one such window; on a CPU, ``plan`` itself."""
    if kind == "cpu":
        return plan
    steps = max(plan.steps_per_window, math.ceil(ACCELERATOR_WINDOW_IMAGES / batch_size))
    return dataclasses.replace(plan, steps_per_window=steps, warmup_steps=max(plan.warmup_steps, steps),
                               predict_batches_per_window=max(plan.predict_batches_per_window,
                                                              math.ceil(ACCELERATOR_WINDOW_IMAGES / INFERENCE_BATCH)))


# --------------------------------------------------------------------------- #
# counting
# --------------------------------------------------------------------------- #
def _layers(model):
    """Every layer of ``model``, nested models expanded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def layer_flops(layer) -> int:
    """Forward FLOPs of one layer for one image: 2 per multiply-add of a
    convolution or a dense layer, 0 for everything else (bias, activation,
    pooling and padding cost well under 1% of VGG's total)."""
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    ):
        out = tuple(layer.output.shape[1:])
        spatial = out[:-1] if layer.data_format == "channels_last" else out[1:]
        # kernel (k..., c_in / groups, c_out): every output position does one
        # multiply-add per kernel entry.
        return 2 * math.prod(spatial) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(tuple(layer.input.shape[1:-1]))  # 1 for the usual (batch, features)
        return 2 * positions * math.prod(layer.kernel.shape)
    return 0


def flops(model) -> int:
    """Forward FLOPs for one image through ``model`` (nested models included)."""
    return sum(layer_flops(layer) for layer in _layers(model))


# --------------------------------------------------------------------------- #
# timing
# --------------------------------------------------------------------------- #
def step_cost(runner, rows) -> dict | None:
    """XLA's cost analysis of the compiled training step (a runner that has
    one: JAX), per trained image: FLOPs and bytes the step reads and writes.
    XLA counts only the taps of a convolution that fall on the image, and no
    gradient for the images themselves: about 80% of ``flops`` x 3 for the spec
    network (docs/performance.md)."""
    lower = getattr(runner, "lower", None)
    if lower is None:
        return None
    one_step = rows[:1]
    analysis = lower(one_step).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # one per device program in older JAX
        analysis = analysis[0]
    images = one_step.shape[1]
    return {"flops_per_image": float(analysis["flops"]) / images,
            "bytes_per_image": float(analysis["bytes accessed"]) / images}


def spread(values) -> dict:
    """median, min and max of a list of per-window figures."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _sync(tensor) -> None:
    """Wait for the device: reading one element back finishes the work."""
    keras.ops.convert_to_numpy(keras.ops.ravel(tensor)[:1])


def _best_matmul(matmul, to_tensor, sync, max_n: int, min_seconds: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    n = 512
    while True:
        a = to_tensor(rng.standard_normal((n, n), np.float32))
        b = to_tensor(rng.standard_normal((n, n), np.float32))
        sync(matmul(a, b))  # warm-up: threads, allocator, library dispatch
        t0 = time.perf_counter()
        sync(matmul(a, b))
        dt = time.perf_counter() - t0
        if dt >= min_seconds or n >= max_n:
            break
        n *= 2
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(matmul(a, b))
        times.append(time.perf_counter() - t0)
    return {"gflops": 2 * n**3 / min(times) / 1e9, "median_gflops": 2 * n**3 / statistics.median(times) / 1e9,
            "n": n}


def matmul_peak_gflops(max_n: int = 8192, min_seconds: float = 0.1, repeats: int = 5, numpy: bool = True,
                       dtype: str = "float32") -> dict:
    """The machine's peak in ``dtype``, as the best GFLOP/s of square matrix
    products in it; n doubles until one product takes ``min_seconds``
    (compute-bound) or reaches ``max_n``.

    Measured through the backend's own matmul on its default device, and, when
    ``numpy`` (for a CPU, float32 only), through NumPy's BLAS as well: the peak
    is the better of the two, since a backend's BLAS need not be the best this
    CPU runs (MKL's on AMD, say).
    """
    def to_tensor(a):
        return keras.ops.convert_to_tensor(a, dtype=dtype)

    found = {"backend": _best_matmul(keras.ops.matmul, to_tensor, _sync, max_n, min_seconds, repeats)}
    if numpy and dtype == "float32":
        found["numpy"] = _best_matmul(np.matmul, np.asarray, lambda c: None, max_n, min_seconds, repeats)
    best = max(found, key=lambda k: found[k]["gflops"])
    return {"gflops": found[best]["gflops"], "n": found[best]["n"], "source": best,
            **{f"{k}_gflops": v["gflops"] for k, v in found.items()}}


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def measure_training(settings, x, y, num_classes: int, plan: BenchPlan) -> dict:
    """Images/s of ``vggcifar train``'s own steps under ``settings`` (from
    vggcifar.settings.resolve): the same model build, shuffle, batch calls and
    runner, ``steps_per_execution`` steps a call. A window is at least one call."""
    from vggcifar import loop as T
    from vggcifar.build import build_training
    from vggcifar.order import chunks

    config = settings.config
    n = len(x)
    bs = config.batch_size
    per_call = config.steps_per_execution
    t0 = time.perf_counter()
    model, train_model = build_training(config, num_classes, settings.steps_per_epoch, x)
    runner = T.make_runner(train_model, x, y, num_classes, per_call=per_call)
    build_seconds = time.perf_counter() - t0
    stream = chunks(config.seed, n, bs, per_call)  # the same shuffle, calls and epoch rollover as fit's

    def steps(count: int) -> tuple[int, int]:
        """At least ``count`` steps in whole calls: (steps, images)."""
        done = images = 0
        while done < count:
            _, _, rows = next(stream)
            losses, _ = runner.run(rows)
            if not np.isfinite(losses).all():
                raise FloatingPointError(f"the training loss became {losses[~np.isfinite(losses)][0]}")
            done += len(rows)
            images += rows.size
        return done, images

    t0 = time.perf_counter()
    steps(max(1, plan.warmup_steps))
    warmup_seconds = time.perf_counter() - t0
    cost = step_cost(runner, next(chunks(config.seed, n, bs, 1))[2])
    rates, busy, steps_per_second = [], [], []
    for _ in range(plan.windows):
        c0, t0 = time.process_time(), time.perf_counter()
        done, images = steps(plan.steps_per_window)
        dt = time.perf_counter() - t0
        rates.append(images / dt)
        steps_per_second.append(done / dt)
        busy.append((time.process_time() - c0) / dt)
    return {"model": model, "train_model": train_model, "images_per_second": spread(rates),
            "steps_per_second": spread(steps_per_second), "steps_per_execution": per_call,
            "cpu_seconds_per_second": statistics.median(busy),
            "build_seconds": build_seconds, "warmup_seconds": warmup_seconds, "cost": cost}


def measure_inference(model, x, plan: BenchPlan, batch_size: int | None = None) -> dict:
    """Images/s of ``vggcifar.inference.predict_probs`` (what evaluation uses)."""
    from vggcifar import inference as I

    batch_size = batch_size or I.INFERENCE_BATCH
    chunk = plan.predict_batches_per_window * batch_size
    reps = -(-chunk // len(x))
    x = np.concatenate([x] * reps)[:chunk] if reps > 1 else x[:chunk]
    I.predict_probs(model, x[:batch_size], batch_size)  # warm-up
    rates = []
    for _ in range(plan.windows):
        t0 = time.perf_counter()
        I.predict_probs(model, x, batch_size)
        rates.append(len(x) / (time.perf_counter() - t0))
    return {"images_per_second": spread(rates), "batch_size": batch_size}


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        if not self.times:
            self.times.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # wait for the step, on any device
        self.times.append(time.perf_counter())


def baseline_model(config, num_classes: int) -> keras.Model:
    """The spec's model as the spec builds it: ZeroPadding2D + valid convs,
    channels-last, float32 input already scaled (no Rescaling layer)."""
    from vggcifar.build import dtype_policy
    from vggcifar.model import SPEC_PADDING, build_vgg

    with dtype_policy("float32"):  # the spec's, whatever policy our path ran under
        return build_vgg(config.model, num_classes=num_classes, width=config.width, dense_units=config.dense_units,
                         dropout=config.dropout, batch_norm=config.batch_norm, padding=SPEC_PADDING,
                         data_format="channels_last")


def measure_baseline(config, x, y, num_classes: int, plan: BenchPlan) -> dict:
    """The spec's plain usage: float32 images scaled up front, the
    ZeroPadding2D model, one ``model.fit`` call with its defaults (shuffle,
    its own data adapter), the same optimizer and batch size as ours."""
    from vggcifar.build import make_optimizer

    steps = plan.warmup_steps + plan.timed_steps
    bs = config.batch_size
    backend.set_random_seed(config.seed)
    reps = -(-steps * bs // len(x))
    idx = np.arange(steps * bs) % len(x) if reps > 1 else np.arange(steps * bs)
    x_float = x[idx].astype("float32") / 255  # the spec: x_train.astype('float32'); x_train /= 255
    y_onehot = keras.utils.to_categorical(y[idx], num_classes)
    model = baseline_model(config, num_classes)
    model.compile(optimizer=make_optimizer(config, steps), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    timer = _StepTimes()
    model.fit(x_float, y_onehot, batch_size=bs, epochs=1, verbose=0, callbacks=[timer])
    t = timer.times[plan.warmup_steps:]
    k = plan.steps_per_window
    rates = [k * bs / (t[(i + 1) * k] - t[i * k]) for i in range(plan.windows)]
    # inference the plain way: model.predict with its defaults
    chunk = x_float[:plan.predict_batches_per_window * INFERENCE_BATCH]
    model.predict(chunk[:32], verbose=0)
    predict = []
    for _ in range(plan.windows):
        t0 = time.perf_counter()
        model.predict(chunk, verbose=0)
        predict.append(len(chunk) / (time.perf_counter() - t0))
    return {"images_per_second": spread(rates), "predict_images_per_second": spread(predict)}


# --------------------------------------------------------------------------- #
# the whole benchmark
# --------------------------------------------------------------------------- #
def run_benchmark_for(recipe: str = "spec", *, quick: bool = False, baseline: bool = True, images: int | None = None,
                      windows: int | None = None, steps_per_window: int | None = None, **settings) -> dict:
    """``run_benchmark`` as `vggcifar bench` asks for it: ``recipe`` with
    ``settings`` (config fields; None: the recipe's), the QUICK or FULL plan
    with what is given in place of its own values."""
    from vggcifar.config import make_config

    plan = QUICK if quick else FULL
    plan = dataclasses.replace(plan, baseline=baseline, windows=windows or plan.windows,
                               steps_per_window=steps_per_window or plan.steps_per_window)
    return run_benchmark(make_config(recipe, **settings), images=images or plan.images, plan=plan)


def run_benchmark(config, *, images: int | None = None, plan: BenchPlan = FULL, num_classes: int = 10,
                  seed: int = 0) -> dict:
    """Every figure of ``vggcifar bench`` as one JSON-ready dict.

    Order matters for memory: the training path is measured first, so
    ``train_peak_rss_mib`` is the peak of our path alone (data included);
    ``peak_rss_mib`` is the whole process's, baseline included.
    """
    from vggcifar.data import load_synthetic
    from vggcifar.settings import resolve

    started = time.perf_counter()
    backend.configure_process()  # before anything compiles
    images = images or plan.images
    plan = plan_for_device(plan, backend.device_info()["kind"], config.batch_size)
    data = load_synthetic(train=images, test=1, seed=seed)
    x, y = data.x_train, data.y_train
    # Every image is trained on: no validation split (a bench validates nothing).
    settings = resolve(dataclasses.replace(config, validate_on_test=True, val_split=0), images)
    config = settings.config
    train = measure_training(settings, x, y, num_classes, plan)
    model = train["model"]
    predict = measure_inference(model, x, plan)
    train_rss = peak_rss_mib()
    forward = flops(model)
    per_train_image = TRAIN_FORWARD_PASSES * forward
    env = backend.environment()
    precision = config.precision
    compute_dtype = keras.DTypePolicy(precision).compute_dtype
    peak = matmul_peak_gflops(numpy=env["device"].get("kind") == "cpu", dtype=compute_dtype)
    train_ips = train["images_per_second"]["median"]
    achieved = train_ips * per_train_image / 1e9
    cost = train["cost"] or {}
    result = {
        **env,
        "precision": precision,
        "compute_dtype": compute_dtype,
        "steps_per_execution": train["steps_per_execution"],
        "model": config.model,
        "width": config.width,
        "dense_units": config.dense_units,
        "padding": config.padding,
        "data_format": config.data_format,
        "batch_size": config.batch_size,
        "images": images,
        "plan": {"warmup_steps": plan.warmup_steps, "windows": plan.windows,
                 "steps_per_window": plan.steps_per_window,
                 "predict_batches_per_window": plan.predict_batches_per_window},
        "train_images_per_second": train_ips,
        "train_images_per_second_spread": train["images_per_second"],
        "train_steps_per_second": train["steps_per_second"]["median"],
        "predict_images_per_second": predict["images_per_second"]["median"],
        "predict_images_per_second_spread": predict["images_per_second"],
        "predict_batch_size": predict["batch_size"],
        "forward_gflop_per_image": forward / 1e9,
        "train_gflop_per_image": per_train_image / 1e9,
        "achieved_gflops": achieved,
        # XLA's cost analysis of the compiled step (JAX): what it counts per
        # trained image, its share of the model's own count (about 0.8: no
        # padding taps, no gradient for the images), FLOPs per byte moved.
        "xla_train_gflop_per_image": cost["flops_per_image"] / 1e9 if cost else None,
        "xla_train_mbytes_per_image": cost["bytes_per_image"] / 1e6 if cost else None,
        "xla_flop_share": cost["flops_per_image"] / per_train_image if cost else None,
        "xla_flop_per_byte": cost["flops_per_image"] / cost["bytes_per_image"] if cost else None,
        "predict_achieved_gflops": predict["images_per_second"]["median"] * forward / 1e9,
        "peak_gflops": peak["gflops"],
        "peak_matmul_n": peak["n"],
        "peak_source": peak["source"],
        "peak_gflops_by_source": {k[:-7]: v for k, v in peak.items() if k.endswith("_gflops")},
        # CPU seconds the process used per second of a training window: near
        # the thread count when it had the cores to itself, far less when the
        # machine was busy with other work (the figures are then low).
        "train_cpu_seconds_per_second": train["cpu_seconds_per_second"],
        "fraction_of_peak": achieved / peak["gflops"],
        "epoch_seconds_50k": 50000 / train_ips,
        # The spec's Results: 100 epochs of CIFAR-10's 50,000 training images.
        "spec_100_epochs_seconds": 100 * 50000 / train_ips,
        "train_peak_rss_mib": train_rss,
        "build_seconds": train["build_seconds"],
        "warmup_seconds": train["warmup_seconds"],
        "baseline_train_images_per_second": None,
        "baseline_train_images_per_second_spread": None,
        "baseline_predict_images_per_second": None,
        "speedup_vs_baseline": None,
    }
    del train, model
    if plan.baseline:
        base = measure_baseline(config, x, y, num_classes, plan)
        result["baseline_train_images_per_second"] = base["images_per_second"]["median"]
        result["baseline_train_images_per_second_spread"] = base["images_per_second"]
        result["baseline_predict_images_per_second"] = base["predict_images_per_second"]["median"]
        result["speedup_vs_baseline"] = train_ips / base["images_per_second"]["median"]
    result["peak_rss_mib"] = peak_rss_mib()
    result["seconds"] = time.perf_counter() - started
    return result


def format_report(r: dict) -> str:
    """The human-readable summary the CLI prints."""

    def s(d):
        return f"(min {d['min']:.1f}, max {d['max']:.1f}, {d['n']} windows)"

    dev = r["device"]
    lines = [
        f"vggcifar bench: {r['model']} width {r['width']:g}, batch {r['batch_size']}, padding {r['padding']}, "
        f"{r['data_format']}, {r['precision']}, {r['steps_per_execution']} step(s) per call",
        f"backend {r['backend']} on {dev.get('name', dev.get('kind'))}; "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        f"training   {r['train_images_per_second']:8.1f} img/s {s(r['train_images_per_second_spread'])}, "
        f"{r['train_steps_per_second']:.1f} steps/s",
        f"inference  {r['predict_images_per_second']:8.1f} img/s {s(r['predict_images_per_second_spread'])}",
    ]
    if r["baseline_train_images_per_second"] is not None:
        lines.append(
            f"baseline   {r['baseline_train_images_per_second']:8.1f} img/s "
            f"{s(r['baseline_train_images_per_second_spread'])}: the spec's plain model.fit; "
            f"ours is {r['speedup_vs_baseline']:.2f}x")
    lines += [
        f"work       {r['forward_gflop_per_image']:.3f} GFLOP forward, {r['train_gflop_per_image']:.3f} "
        f"per trained image: {r['achieved_gflops']:.1f} GFLOP/s achieved",
    ]
    if r.get("xla_train_gflop_per_image") is not None:
        lines.append(f"xla        {r['xla_train_gflop_per_image']:.3f} GFLOP and {r['xla_train_mbytes_per_image']:.1f} MB "
                     f"per trained image in the compiled step ({100 * r['xla_flop_share']:.0f}% of the count above, "
                     f"{r['xla_flop_per_byte']:.0f} FLOP/byte)")
    lines += [
        f"peak       {r['peak_gflops']:.1f} GFLOP/s {r['compute_dtype']} matmul ({r['peak_source']}, "
        f"n={r['peak_matmul_n']}): "
        f"{100 * r['fraction_of_peak']:.0f}% of it",
        f"cpu        {r['train_cpu_seconds_per_second']:.2f} CPU seconds per second while training, "
        f"of {os.cpu_count()} cores (far fewer: the machine was busy, the figures are low)",
        f"epoch      {r['epoch_seconds_50k'] / 60:.1f} min for 50,000 images at this speed, "
        f"{r['spec_100_epochs_seconds'] / 3600:.2f} h for the spec's 100 epochs (evaluation not included)",
        f"memory     peak RSS {r['train_peak_rss_mib']:.0f} MiB for our path "
        f"({r['images']} uint8 images held), {r['peak_rss_mib']:.0f} MiB with the baseline",
    ]
    return "\n".join(lines) + "\n"
