"""The training path as a GPU would punish it, proven on the CPU with JAX: host
to device transfers per epoch under JAX's transfer guard, one host read per
call, compilations counted (a short last batch, the same run again finding its
step in the compile cache), no TensorFlow in a JAX run, and the same weights
on one and two (virtual CPU) devices, K steps a call or one, and through
Keras' own train_on_batch; what the compiled step computes in and what XLA's
cost analysis counts of it, in the bench's JSON too. Each runs in a child process with KERAS_BACKEND=jax."""

import json
import os
import subprocess
import sys

import pytest

from conftest import xla_flags

pytestmark = pytest.mark.slow

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _has_jax() -> bool:
    return subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode == 0


def run_jax_child(code: str, *args, devices: int = 2, cache=None, timeout: int = 900) -> dict:
    """Run ``code`` under KERAS_BACKEND=jax on ``devices`` virtual CPU devices;
    the JSON it prints after "RESULT " (the child's stderr on failure)."""
    if not _has_jax():
        pytest.skip("jax is not installed (pip install -e '.[test]' installs it)")
    # Virtual devices are threads that meet in each all-reduce; on a busy CPU
    # one can be late by more than XLA's 40 s before it ends the process.
    flags = xla_flags(f"--xla_force_host_platform_device_count={devices}",
                      "--xla_cpu_collective_call_terminate_timeout_seconds=900",
                      "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags,
           "VGGCIFAR_JAX_CACHE": str(cache) if cache else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One compile cache for the children that count no compilations: the
    initialisers and steps one child compiled, the next one loads."""
    return tmp_path_factory.mktemp("jax-cache")


# Counting, in the child: every host-to-device transfer (JAX's transfer guard
# logs each on descriptor 2, one line per device), every read of a device array
# by the host (jax.Array._value: what jax.device_get, float(), .tolist() and
# np.asarray go through, but for np.asarray of a single-device array, which
# numpy reads through the buffer protocol; on a CPU, JAX does not guard
# device-to-host copies), every XLA compilation with its function's name and
# whether the persistent cache had it.
PROBE = r"""
import json, os, sys
import jax
from jax._src import array as jax_array

jax.config.update("jax_transfer_guard_host_to_device", "log_explicit")
reads, segment, compiles, hit = [0], ["start"], [], [False]
value = jax_array.ArrayImpl._value
def _counted(self):
    reads[0] += 1
    return value.fget(self)
jax_array.ArrayImpl._value = property(_counted)

def _event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
        hit[0] = True
def _duration(event, seconds, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append({"segment": segment[0], "name": kw.get("fun_name"), "cache_hit": hit[0],
                         "seconds": seconds})
        hit[0] = False
jax.monitoring.register_event_listener(_event)
jax.monitoring.register_event_duration_secs_listener(_duration)

def redirect_stderr(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)

def mark(text):
    os.write(2, ("@@ " + text + "\n").encode())

def transfers_by_segment(path):
    out, current = {}, "start"
    for line in open(path, errors="replace"):
        if line.startswith("@@ segment "):
            current = line[len("@@ segment "):].strip()
        elif "host-to-device transfer" in line:
            out[current] = out.get(current, 0) + 1
    return out

def enter(name):
    segment[0] = name
    mark("segment " + name)

from vggcifar import loop as T
calls = []
_make = T.make_runner
def make_runner(*a, **k):
    runner = _make(*a, **k)
    run = runner.run
    def counted(rows):
        before = reads[0]
        out = run(rows)
        calls.append({"segment": segment[0], "steps": len(rows), "reads": reads[0] - before})
        return out
    runner.run = counted
    return runner
T.make_runner = make_runner
"""

FIT = PROBE + r"""
import keras
import numpy as np
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.runs import train_run
from vggcifar.settings import resolve

folder, epochs, again = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "again"
redirect_stderr(os.path.join(folder, "stderr-again.txt" if again else "stderr.txt"))
# 168 training images at batch 16: 10 whole batches and a short one of 8 an
# epoch; at 4 steps a call, 4 calls (4, 4, 2, and the short batch). 32 held out.
data = load_synthetic(train=200, test=32, seed=4)
quiet = dict(verbose=0, log=lambda *_: None)
def config_on(devices, epochs):
    return make_config("vgg16-bn", width=0.0625, dense_units=16, model="vgg11", epochs=epochs, batch_size=16,
                       val_split=32, precision="float32", steps_per_execution=4, devices=devices)
result, fitted = {}, {}
for devices in ([1] if again else [1, 2]):
    calls.clear(); compiles.clear()
    enter(f"{devices} start")
    def end(e, devices=devices):
        enter(f"{devices} after epoch {e.epoch}")
    fitted[devices] = T.fit(resolve(config_on(devices, epochs), len(data.x_train)), data,
                            os.path.join(folder, f"run{devices}" + ("-again" if again else "")), on_epoch_end=end,
                            **quiet)
    enter(f"{devices} done")
    result[devices] = {"calls": calls[:], "compiles": compiles[:],
                       "history": [{k: h[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
                                   for h in fitted[devices].state.history]}
if not again:  # the same run on one device and on two: its weights at the end
    one, two = ([keras.ops.convert_to_numpy(v.value) for v in fitted[d].model.variables] for d in (1, 2))
    result["weights_close"] = len(one) == len(two) > 0 and all(
        np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(one, two))
else:  # 201 images, 32 held out: on two devices the short last batch of 9 trains 8
    enter("odd")
    metrics = train_run(config_on(2, 1), load_synthetic(train=201, test=32, seed=4), os.path.join(folder, "odd"),
                        **quiet)
    result["odd"] = {k: metrics[k] for k in ("train_images", "val_images")}
result["transfers"] = transfers_by_segment(os.path.join(folder, "stderr-again.txt" if again else "stderr.txt"))
result["tensorflow_imported"] = "tensorflow" in sys.modules
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Three epochs on one device, then on two, in one JAX process; and the
    one-device run again in a new process, with the same compile cache (the
    same three epochs: the schedule's length is part of the compiled step)."""
    folder = tmp_path_factory.mktemp("fit")
    cache = folder / "jax-cache"
    first = run_jax_child(FIT, folder, 3, "new", cache=cache, timeout=1800)
    again = run_jax_child(FIT, folder, 3, "again", cache=cache, timeout=1800)
    return first, again


def _per_epoch(result, devices, epoch):
    """(host-to-device transfers, calls) of epoch ``epoch`` (from 2): from the
    end of the epoch before to its own end, the checkpoint of the one before,
    its validation, train/inference check and finite check included."""
    transfers = result["transfers"].get(f"{devices} after epoch {epoch - 1}", 0)
    calls = [c for c in result[str(devices)]["calls"] if c["segment"] == f"{devices} after epoch {epoch - 1}"]
    return transfers, calls


@pytest.mark.parametrize("devices", [1, 2])
def test_after_the_first_epoch_an_epoch_sends_at_most_its_calls_plus_four(fitted, devices):
    result, _ = fitted
    for epoch in (2, 3):
        transfers, calls = _per_epoch(result, devices, epoch)
        assert len(calls) == 4 and [c["steps"] for c in calls] == [4, 4, 2, 1]
        # Measured: 1 on one device, 2 on two (the epoch's order, once to each).
        assert transfers <= len(calls) + 4, (epoch, transfers)
        assert transfers <= devices, (epoch, transfers)


@pytest.mark.parametrize("devices", [1, 2])
def test_the_host_reads_once_a_call(fitted, devices):
    result, _ = fitted
    calls = result[str(devices)]["calls"]
    assert len(calls) == 12
    assert [c["reads"] for c in calls] == [1] * 12


def test_the_step_compiles_once_per_batch_shape_and_nothing_compiles_after_the_first_epoch(fitted):
    result, again = fitted
    for devices in ("1", "2"):
        compiles = result[devices]["compiles"]
        steps = [c for c in compiles if c["name"] == "jit(step)"]
        # The whole batch and the short last one: two programs, each compiled once.
        assert len(steps) == 2, steps
        after_first = [c for c in compiles if "after epoch" in c["segment"]]
        assert after_first == [], after_first
    # The same run in a new process (a resumed one, a second one) finds both in
    # the compile cache: the step is loaded, not compiled again.
    steps = [c for c in again["1"]["compiles"] if c["name"] == "jit(step)"]
    assert len(steps) == 2 and all(c["cache_hit"] for c in steps), steps


def test_two_devices_train_like_one(fitted):
    result, again = fitted
    # Same seed, same batches, same function: the same run. Not bit for bit:
    # each device sums the gradient of its half and an all-reduce adds the two
    # halves, so float32 sums are taken in another order.
    one, two = result["1"]["history"], result["2"]["history"]
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert (b["accuracy"], b["val_accuracy"]) == (a["accuracy"], a["val_accuracy"])
    assert one[0]["loss"] != one[-1]["loss"]
    assert result["weights_close"]
    # A whole run on two devices, its files and metrics: 169 training images at
    # batch 16 end in a short batch of 9, which splits in two halves of 4 (the
    # image left over is not trained on), and metrics.json says 168.
    assert again["odd"] == {"train_images": 168, "val_images": 32}


def test_a_jax_run_imports_no_tensorflow(fitted):
    result, again = fitted
    # Seeding, building, three epochs of steps, validation and checkpoints; in
    # the second process also a whole run's results, pictures and model file.
    assert result["tensorflow_imported"] is False
    assert again["tensorflow_imported"] is False


SEED = r"""
import json, random, sys
import numpy as np
sys.modules["tensorflow"] = None  # Keras' own set_random_seed then seeds no TensorFlow (and imports none)
import keras
from vggcifar import backend

def draws():
    gen = keras.random.SeedGenerator()
    return [random.random(), float(np.random.rand()), keras.ops.convert_to_numpy(gen.next()).tolist(),
            keras.ops.convert_to_numpy(keras.random.uniform((3,))).tolist()]

backend.set_random_seed(7)
ours = draws()
keras.utils.set_random_seed(7)
theirs = draws()
RESULTS["seed"] = {"ours": ours, "theirs": theirs}
"""


def test_seeding_without_tensorflow_seeds_as_keras_does(inspected):
    result = inspected["seed"]
    assert result["ours"] == result["theirs"]


# --------------------------------------------------------------------------- #
# several devices through the same runner
# --------------------------------------------------------------------------- #
RUNNERS = r"""
import json, re
import numpy as np
import keras
from vggcifar import backend, loop
from vggcifar.build import build_training
from vggcifar.config import make_config
from vggcifar.order import chunks
from vggcifar.data import load_synthetic

# 200 images at batch 16: an epoch of 12 whole batches and a short one of 8.
data = load_synthetic(train=200, test=16, seed=4)
x, y = data.x_train, data.y_train
config = make_config("vgg16-bn", width=0.0625, dense_units=16, model="vgg11", epochs=1, batch_size=16, val_split=0,
                     precision="float32")  # momentum, batch norm, augmentation and dropout's random state

def train(devices, k, keras_steps=False, inspect=False, epochs=1):
    with backend.device_scope(backend.resolve_devices(devices, config.batch_size)):
        _, model = build_training(config, 10, 13)
        runner = loop.make_runner(model, x, y, 10, per_call=k)
        for epoch, _, rows in chunks(config.seed, len(x), config.batch_size, k):
            if epoch == epochs:
                break
            if keras_steps:  # Keras' own step, a batch at a time, placed by the distribution
                # compiled, as the runner's step is: Keras runs a model eagerly (an XLA
                # compilation per operation, 1,000 here) when a layer does not vouch for XLA
                # (RandomTranslation), and its setter refuses True, though the layer compiles.
                model._jit_compile = True
                for r in np.asarray(rows):
                    model.train_on_batch(x[r], np.eye(10, dtype="float32")[y[r]])
            else:
                runner.run(rows)
        if not inspect:
            return [keras.ops.convert_to_numpy(v.value) for v in model.variables + model.optimizer.variables], None
        text = runner.lower(next(chunks(config.seed, len(x), config.batch_size, k))[2]).compile().as_text()
        # Each device's program: the uint8 images it gathers for a step (the set itself, 200, aside).
        gathered = sorted({int(n) for n in re.findall(r"u8\[(\d+),32,32,3\]", text)} - {len(x)})
        return [keras.ops.convert_to_numpy(v.value) for v in model.variables + model.optimizer.variables], gathered

out = {}
# (One device is only inspected: its training, against two devices', is the fitted runs'.)
for name, args in {"one-k1": (1, 1, False, True, 0), "two-k1": (2, 1, False, True), "two-k8": (2, 8),
                   "two-keras": (2, 1, True)}.items():
    out[name] = train(*args)
def close(a, b):
    return all(np.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(a, b))
ref = out["two-k1"][0]
print("RESULT " + json.dumps({
    "k8_close": close(out["two-k8"][0], ref), "keras_close": close(out["two-keras"][0], ref),
    "gathered": {k: v[1] for k, v in out.items() if v[1] is not None}}))
"""


def test_two_devices_train_through_the_same_runner_as_one(jax_cache):
    # (The inspection's compile finds the step in the cache.)
    result = run_jax_child(RUNNERS, devices=2, cache=jax_cache, timeout=1800)
    # On two devices each device's step gathers half a batch (8 of 16 images)
    # from its copy of the set: the data-parallel layout splits it. On one, whole.
    assert result["gathered"]["two-k1"] == [8] and result["gathered"]["one-k1"] == [16]
    # Eight steps a call end where one a call ends, as on one device...
    assert result["k8_close"]
    # ...and where Keras' own data-parallel train_on_batch ends (the path these replaced).
    # (Where one device ends: test_two_devices_train_like_one.)
    assert result["keras_close"]


# --------------------------------------------------------------------------- #
# the compiled step: what it computes in, what it donates, what XLA counts
# --------------------------------------------------------------------------- #
CENSUS = r"""
import json, re, warnings
import numpy as np
import keras
from vggcifar import bench, loop
from vggcifar.build import build_training
from vggcifar.config import make_config
from vggcifar.order import chunks
from vggcifar.data import load_synthetic

def lowered(recipe, precision, **kw):
    data = load_synthetic(train=64, test=8, seed=4)
    config = make_config(recipe, batch_size=32, val_split=0, precision=precision, epochs=1, **kw)
    model, train_model = build_training(config, 10, 2)
    runner = loop.make_runner(train_model, data.x_train, data.y_train, 10)
    rows = next(chunks(0, 64, 32, 1))[2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        low = runner.lower(rows)
    leaves = sum(len(group) for group in runner._groups())
    return model, runner, rows, low, [str(w.message) for w in caught], leaves

# vgg16-bn under mixed_bfloat16 at a sixteenth width: the program's census.
model, _, _, low, caught, leaves = lowered("vgg16-bn", "mixed_bfloat16", width=0.0625, dense_units=16)
text = low.as_text()
convs = re.findall(r"stablehlo\.convolution.*?:\s*\(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)\s*->\s*tensor<[^>]*x(\w+)>",
                   text)
stats = re.findall(r"applies stablehlo\.add across dimensions = \[0, 1, 2\] : \(tensor<[^>]*x(\w+)>", text)
softmax = re.findall(r"stablehlo\.(exponential|log) %\S+ : tensor<32x10x(\w+)>", text)
bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
census = {"convolutions": [list(c) for c in convs], "conv_layers": sum(isinstance(l, keras.layers.Conv2D) for l in model.layers),
          "statistics": stats, "bn_layers": bn, "softmax_loss": softmax,
          "aliased": text.count("tf.aliasing_output"), "state_leaves": leaves, "warnings": caught}

# The spec network at full width in float32, compiled: XLA's count against the model's.
model, runner, rows, low, _, _ = lowered("spec", "float32")
cost = bench.step_cost(runner, rows)
convs = [(layer.input.shape[1], layer.kernel.shape) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
paddings = sorted({layer.padding for layer in model.layers if isinstance(layer, keras.layers.Conv2D)})
dense = [layer.kernel.shape for layer in model.layers if isinstance(layer, keras.layers.Dense)]
RESULTS["census"] = {"census": census, "cost": cost, "model_train_flops": 3 * bench.flops(model),
                     "convs": [[h, list(k)] for h, k in convs], "dense": [list(k) for k in dense], "paddings": paddings}
"""


@pytest.fixture(scope="module")
def census(inspected):
    return inspected["census"]


def test_the_bfloat16_step_convolves_in_bfloat16_and_keeps_statistics_softmax_and_loss_in_float32(census):
    c = census["census"]
    # Every convolution in bfloat16: 13 forward, 13 for the kernels' gradients and 12
    # for the inputs' (the first layer's input, the images, needs none).
    assert c["conv_layers"] == 13
    assert len(c["convolutions"]) == 3 * 13 - 1
    assert all(t == ["bf16", "bf16", "bf16"] for t in c["convolutions"]), c["convolutions"]
    # Batch norm's statistics (sums over batch, height and width): all in float32,
    # at least the mean and the variance of each of the 13 layers.
    assert len(c["statistics"]) >= 2 * c["bn_layers"] == 26
    assert set(c["statistics"]) == {"f32"}
    # The softmax's exponential and the loss's logarithm, in float32.
    assert sorted(c["softmax_loss"]) == [["exponential", "f32"], ["log", "f32"]]


def test_the_step_donates_the_whole_state(census):
    c = census["census"]
    # Model, optimizer and random state: each array's buffer is reused for its new value.
    assert c["aliased"] == c["state_leaves"] > 100
    assert not [w for w in c["warnings"] if "donated buffers were not usable" in w]


def xla_counted_flops(convs, dense) -> int:
    """The training step's FLOPs as XLA's cost analysis counts them, from the
    layers' shapes alone: multiply-adds of the valid taps only (a 3x3 "same"
    convolution on HxW has (3H-2)(3W-2) of its 9HW, the others fall on the
    padding), for the forward pass, the kernels' gradients and the inputs'
    gradients except the first layer's (the images need none); dense layers 3x."""
    total, first = 0, True
    for h, (kh, kw, cin, cout) in convs:
        valid = (3 * h - 2) ** 2 * cin * cout  # valid taps over all output positions of a 3x3 kernel
        assert (kh, kw) == (3, 3)
        total += valid * (2 if first else 3)
        first = False
    total += 3 * sum(a * b for a, b in dense)
    return 2 * total  # 2 FLOPs a multiply-add


def test_xlas_count_of_the_step_is_the_models_work_less_padding_and_the_images_gradient(census):
    assert census["paddings"] == ["same"]
    model_flops = census["model_train_flops"]  # 3 forward passes of every multiply-add (bench.flops)
    assert model_flops / 1e9 == pytest.approx(1.9927, abs=1e-4)  # the spec's 0.664 GFLOP forward, x3
    cost = census["cost"]
    ratio = cost["flops_per_image"] / model_flops
    # XLA counts 80% of the model's own count (measured: 0.803): it skips the
    # first convolution's input gradient and the taps that fall on padding.
    # The oracle from the shapes alone gives 0.800; the rest is element-wise work.
    oracle = xla_counted_flops(census["convs"], census["dense"]) / model_flops
    assert oracle == pytest.approx(0.800, abs=0.005)
    assert abs(ratio - 0.80) <= 0.05, ratio
    assert abs(ratio - oracle) <= 0.01, (ratio, oracle)
    assert cost["bytes_per_image"] > 0


RESUME = r"""
import json, os, sys
import numpy as np
from vggcifar import loop as T
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.rundir import RunDir
from vggcifar.settings import resolve

folder = sys.argv[1]
data = load_synthetic(train=200, test=16, seed=4)
config = make_config("vgg16-bn", width=0.0625, dense_units=16, model="vgg11", epochs=2, batch_size=16, val_split=0,
                     precision="float32", steps_per_execution=4, checkpoint_minutes=1e-5)
config = resolve(config, len(data.x_train))
quiet = dict(verbose=0, log=lambda *_: None)
T.fit(config, data, os.path.join(folder, "full"), **quiet)
for steps in (6, 9):  # stops mid-call, then in the next epoch after its short batch
    try:
        T.fit(config, data, os.path.join(folder, "parts"), resume=steps == 9, max_steps=steps, **quiet)
    except T.Interrupted:
        pass
T.fit(config, data, os.path.join(folder, "parts"), resume=True, **quiet)
def final(name):
    with np.load(RunDir(os.path.join(folder, name)).list_checkpoints()[-1] / "variables.npz") as z:
        return [z[k] for k in sorted(z.files)]
same = all(np.array_equal(a, b) for a, b in zip(final("full"), final("parts")))
print("RESULT " + json.dumps({"bit_identical": same, "arrays": len(final("full"))}))
"""


def test_a_resumed_jax_run_on_the_cpu_is_bit_identical(tmp_path, jax_cache):
    # Its four trainings compile one step; the three after the first load it.
    result = run_jax_child(RESUME, tmp_path, devices=1, cache=jax_cache, timeout=1800)
    assert result["arrays"] > 0 and result["bit_identical"]


BENCH = r"""
import contextlib, io, json
import keras
from vggcifar import bench
from vggcifar.cli import main
from vggcifar.model import build_vgg

original = bench.matmul_peak_gflops  # the peak on small products: this checks the figures, not speed
bench.matmul_peak_gflops = lambda **kw: original(**{**kw, "max_n": 512, "repeats": 2})
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(["bench", "--quick", "--json", "--no-baseline", "--width", "0.0625", "--dense-units", "16",
                   "--batch-size", "8", "--images", "64", "--windows", "1", "--steps-per-window", "1",
                   "--precision", "float32"])
report = json.loads(out.getvalue())
model = build_vgg(width=0.0625, dense_units=16, padding=report["padding"], data_format="channels_last")
convs = [(layer.input.shape[1], list(layer.kernel.shape)) for layer in model.layers
         if isinstance(layer, keras.layers.Conv2D)]
dense = [list(layer.kernel.shape) for layer in model.layers if isinstance(layer, keras.layers.Dense)]
RESULTS["bench"] = {"status": status, "bench": report, "convs": convs, "dense": dense}
"""

# The census, the bench and the seeding in one child (one start-up of JAX).
# The seeding last: it makes TensorFlow unimportable, and Keras' augmentation
# layers take a "tensorflow" in sys.modules for TensorFlow.
INSPECT = "import json\nRESULTS = {}\n" + CENSUS + BENCH + SEED + 'print("RESULT " + json.dumps(RESULTS))\n'


@pytest.fixture(scope="module")
def inspected(jax_cache):
    return run_jax_child(INSPECT, devices=1, cache=jax_cache)


def test_the_benchs_json_gives_xlas_count_of_the_step_on_jax(inspected):
    result = inspected["bench"]
    assert result["status"] == 0
    r = result["bench"]
    assert r["backend"] == "jax"
    xla = r["xla_train_gflop_per_image"] * 1e9
    # The count from the layers' shapes, and the element-wise work beside it
    # (the spec network at a sixteenth width; measured: 1.036 of the shapes' count,
    # 0.805 of the model's own count, as at full width).
    shapes = xla_counted_flops(result["convs"], result["dense"])
    assert 1.0 <= xla / shapes <= 1.10, xla / shapes
    assert abs(r["xla_flop_share"] - 0.80) <= 0.05, r["xla_flop_share"]
    assert r["xla_flop_share"] == pytest.approx(r["xla_train_gflop_per_image"] / r["train_gflop_per_image"])
    assert r["xla_flop_per_byte"] == pytest.approx(xla / (r["xla_train_mbytes_per_image"] * 1e6))
    assert r["xla_train_mbytes_per_image"] > 0
