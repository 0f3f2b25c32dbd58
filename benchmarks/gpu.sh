#!/usr/bin/env bash
# The prepared GPU check: every figure the project wants from one NVIDIA GPU, in
# at most 8 minutes, as one JSON object in $OUT/gpu.json (each part under its
# name) and the log in $OUT/log.txt ($OUT defaults to gpu-out/).
#
#   bash benchmarks/gpu.sh fetch   # here, with the registries: the wheels the check imports into .whl/
#   bash benchmarks/gpu.sh         # there, without network: what the machine lacks from .whl/, then measure
#   bash benchmarks/gpu.sh plan    # the parts and their time limits
#
# The GPU machine is expected to have Python ($PYTHON, default python3) with numpy
# and JAX with CUDA, perhaps PyTorch, and nothing else: no Keras, no TensorFlow, no
# network. `fetch` downloads, for Python $WHEEL_PYTHON (default 3.12) on x86-64
# Linux, Keras and every package it imports (absl-py, rich, h5py, ml-dtypes,
# namex, optree, ...), matplotlib (a run draws its curves) and pillow, with their
# own dependencies; the check unpacks into a fresh folder only the distributions
# the machine does not have. Each part runs in its own process with its own time
# limit, and the limits add up to at most CHECK_SECONDS with the set-up:
#   bench-jax-spec      the spec recipe, float32, batch 32, with the spec's plain model.fit
#   bench-jax-bn        vgg16-bn, bfloat16, batch 256
#   train-jax-k1/kauto  2 epochs of vgg16-bn on 50,000 synthetic images, 1 and auto steps a call
#   levers-jax-loop     the spec at batch 32: K=1, K=32 calls of one step, one lax.scan of 32 (K=8 when tiny)
#   peer-torch-bn/spec  plain PyTorch VGG-16 (channels_last, bf16 autocast, torch.compile, else eager)
#   bench-torch-spec/bn our path on Keras' torch backend
# The JAX parts share one compilation cache (the same step compiles once), so
# train-jax-kauto finds its step in it. GPU_CHECK_TINY=1 runs the same steps on a
# tiny network and set, to rehearse the check on a CPU (with GPU_CHECK_SCALE=N if the
# CPU needs N times the GPU's time limits).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=".whl"
KERAS_VERSION="${KERAS_VERSION:-3.15.1}"
WHEEL_PYTHON="${WHEEL_PYTHON:-3.12}"
CHECK_SECONDS=480

# name limit: the parts in the order they run (most wanted first).
PARTS_PLAN="bench-jax-spec 75
bench-jax-bn 60
train-jax-k1 55
train-jax-kauto 35
levers-jax-loop 50
peer-torch-bn 45
bench-torch-spec 50
bench-torch-bn 45
peer-torch-spec 35"
SETUP_SECONDS=30  # unpacking the wheels and reading the machine
# GPU_CHECK_SCALE multiplies every limit: for a rehearsal on a slow or busy CPU (the limits are a GPU's).
limit_of() { echo "$PARTS_PLAN" | awk -v n="$1" -v k="${GPU_CHECK_SCALE:-1}" '$1 == n {print int($2 * k + 0.5)}'; }

case "${1:-}" in
plan)
    echo "$PARTS_PLAN"
    echo "setup $SETUP_SECONDS"
    echo "total $(echo "$PARTS_PLAN" | awk -v s="$SETUP_SECONDS" '{t += $2} END {print t + s}') of $CHECK_SECONDS"
    exit 0 ;;
fetch)
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
    rm -rf "$WHEELS"
    abi="cp${WHEEL_PYTHON/./}"
    python3 -m pip download --only-binary=:all: --python-version "$WHEEL_PYTHON" --implementation cp --abi "$abi" \
        --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --platform any -d "$WHEELS" "keras==$KERAS_VERSION" matplotlib pillow || exit 1
    ls "$WHEELS"
    exit 0 ;;
"") ;;
*) echo "usage: bash benchmarks/gpu.sh [fetch|plan]" >&2; exit 2 ;;
esac

OUT="${OUT:-gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
rm -f "$OUT/gpu.json" "$OUT/log.txt"  # a rerun starts clean
WORK=$(mktemp -d)                      # run folders, parts' output, the unpacked wheels
trap 'rm -rf "$WORK"' EXIT
# Kept between checks: a rerun finds what the last one compiled.
export VGGCIFAR_JAX_CACHE="${GPU_CHECK_CACHE:-${TMPDIR:-/tmp}/vggcifar-gpu-check-jax-cache}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }

# The wheels of every distribution $PY cannot import, unpacked into $WORK/site
# (a wheel is a zip of what goes into site-packages: no pip needed, none run).
"$PY" - "$WHEELS" "$WORK/site" >> "$OUT/log.txt" 2>&1 <<'EOF_SITE'
import importlib.metadata as md, re, sys, zipfile
from pathlib import Path
wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
site.mkdir(parents=True)
for wheel in sorted(wheels.glob("*.whl")):
    dist = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        print(f"have {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        zipfile.ZipFile(wheel).extractall(site)
        print(f"unpacked {wheel.name}")
EOF_SITE
export PYTHONPATH="$PYTHONPATH:$WORK/site"  # the machine's own packages first

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    NET=(--width 0.0625 --dense-units 16); SET=(--set width=0.0625 --set dense_units=16)
    IMAGES=(--images 512); LIMIT=(--limit-train 512 --limit-test 128)
    # K = 8, not 32: on a busy 2-core CPU the three variants at K = 32 took 68 s from a cold cache (50 allowed).
    LEVER_K=8; LEVERS=(--width 0.0625 --dense-units 16 --images 512 --warmup 8 --windows 2 --steps 8)
    PEER=(--width 0.0625 --dense-units 16 --images 512 --warmup 2 --windows 2 --steps 2)
else
    NET=(); SET=(); IMAGES=(); LIMIT=()
    LEVER_K=32; LEVERS=(--images 8192 --warmup 64 --windows 3 --steps 64); PEER=()
fi

# run NAME CMD...: the part NAME, within its limit (PARTS_PLAN). Its record:
# ok (exit status 0 and the result read), exit, seconds, limit, and result: the
# JSON object the command printed last (a line starting with "{"), or for a
# training run what its run folder holds (part_json NAME FOLDER).
run() {
    local name=$1 limit
    limit=$(limit_of "$name"); shift
    log "$name (up to ${limit} s): $*"
    local started=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$WORK/$name.stdout" 2>> "$OUT/log.txt"
    local status=$?
    record "$name" "$status" $((SECONDS - started)) "$limit" "${RUN_FOLDER:-}"
    log "$name: exit $status in $((SECONDS - started)) s"
}

record() {  # record NAME STATUS SECONDS LIMIT [RUN_FOLDER]
    "$PY" - "$WORK" "$@" >> "$OUT/log.txt" 2>&1 <<'EOF_RECORD'
import json, sys
from pathlib import Path
work, name, status, seconds, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
folder = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
result, why = None, None
if folder:  # a training run: its history, metrics and config
    try:
        run = Path(folder)
        rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
        history = [dict(zip(rows[0], r)) for r in rows[1:]]
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        result = {"epoch_seconds": [float(h["seconds"]) for h in history], "test_accuracy": metrics["test_accuracy"],
                  "train_images": metrics["train_images"], "steps_per_execution": config["steps_per_execution"],
                  "precision": config["precision"], "batch_size": config["batch_size"]}
    except (OSError, ValueError, KeyError, IndexError) as exc:
        why = f"run folder unreadable: {exc}"
else:
    lines = [l for l in (work / f"{name}.stdout").read_text(errors="replace").splitlines() if l.startswith("{")]
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError as exc:
        why = f"its last JSON line does not parse: {exc}"
    if result is None and why is None:
        why = "it printed no JSON line"
if status == 124 or status == 137:
    why = f"timed out after {limit} s"
elif status != 0:
    why = f"exit status {status}"
part = {"ok": status == 0 and result is not None, "exit": status, "seconds": seconds, "limit": limit,
        "result": result}
if why and not part["ok"]:
    part["why"] = why
(work / "parts").mkdir(exist_ok=True)
(work / "parts" / f"{name}.json").write_text(json.dumps(part))
EOF_RECORD
    collect
}

skip() {  # skip NAME WHY
    mkdir -p "$WORK/parts"
    "$PY" -c 'import json, sys; print(json.dumps({"skipped": sys.argv[1]}))' "$2" > "$WORK/parts/$1.json"
    log "$1: skipped, $2"
    collect
}

# collect: every part so far into $OUT/gpu.json, rewritten after each part (by
# rename), so that a check cut short still returns what it measured.
collect() {
    "$PY" - "$WORK/parts" "$OUT/gpu.json" <<'EOF_COLLECT'
import json, os, sys
from pathlib import Path
parts, out = Path(sys.argv[1]), Path(sys.argv[2])
found = {}
for f in sorted(parts.glob("*.json")):
    try:
        found[f.stem] = json.loads(f.read_text() or "null")
    except ValueError as exc:
        found[f.stem] = {"ok": False, "why": f"unreadable: {exc}"}
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps(found, indent=1) + "\n")
os.replace(tmp, out)
EOF_COLLECT
}

# The machine, as the part "machine": the GPU and the versions measured.
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } \
    >> "$OUT/log.txt" 2>&1
mkdir -p "$WORK/parts"
KERAS_BACKEND=jax "$PY" - > "$WORK/parts/machine.json" 2>> "$OUT/log.txt" <<'EOF_MACHINE'
import importlib, json, os, platform, subprocess
info = {"python": platform.python_version(), "cpu_count": os.cpu_count()}
try:
    info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    info["gpu"] = f"no nvidia-smi ({exc.__class__.__name__})"
for name in ("keras", "jax", "jaxlib", "torch", "numpy", "matplotlib", "h5py"):
    try:
        info[name] = importlib.import_module(name).__version__
    except Exception as exc:
        info[name] = None
        info.setdefault("missing", {})[name] = f"{exc.__class__.__name__}: {exc}"[:200]
try:
    import jax
    info["jax_devices"] = [str(d) for d in jax.devices()]
except Exception as exc:
    info["jax_devices"] = f"{exc.__class__.__name__}: {exc}"[:200]
print(json.dumps(info))
EOF_MACHINE
collect

has() { "$PY" -c "import $1" 2>/dev/null; }

bench_spec() {
    KERAS_BACKEND=$1 run "bench-$1-spec" "$PY" -m vggcifar bench --quick --json "${IMAGES[@]}" --recipe spec \
        --batch-size 32 --precision float32 "${NET[@]}"
}
bench_bn() {
    KERAS_BACKEND=$1 run "bench-$1-bn" "$PY" -m vggcifar bench --quick --json --no-baseline "${IMAGES[@]}" \
        --recipe vgg16-bn --batch-size 256 --precision mixed_bfloat16 "${NET[@]}"
}

if has jax; then
    bench_spec jax
    bench_bn jax
    for k in 1 auto; do
        RUN_FOLDER="$WORK/train-k$k" KERAS_BACKEND=jax run "train-jax-k$k" "$PY" -m vggcifar train \
            --dataset synthetic "${LIMIT[@]}" --recipe vgg16-bn --epochs 2 --steps-per-execution "$k" --quiet \
            --run-dir "$WORK/train-k$k" "${SET[@]}"
    done
    # K steps a call on JAX: K calls of one compiled step (the runner's loop)
    # against one compiled lax.scan over them, the spec network at batch 32.
    KERAS_BACKEND=jax run levers-jax-loop "$PY" benchmarks/levers.py --json --batch-size 32 "${LEVERS[@]}" \
        k1:steps_per_execution=1 "k$LEVER_K:steps_per_execution=$LEVER_K" \
        "scan$LEVER_K:steps_per_execution=$LEVER_K,jax_loop=scan"
else
    for part in bench-jax-spec bench-jax-bn train-jax-k1 train-jax-kauto levers-jax-loop; do
        skip "$part" "jax not installed"
    done
fi
if has torch; then
    run peer-torch-bn "$PY" benchmarks/torch_peer.py --batch-size 256 --dense-units 512 --batch-norm \
        --compile-seconds 25 "${PEER[@]}"
    bench_spec torch
    bench_bn torch
    run peer-torch-spec "$PY" benchmarks/torch_peer.py --batch-size 32 --precision float32 --compile-seconds 15 \
        "${PEER[@]}"
else
    for part in peer-torch-bn bench-torch-spec bench-torch-bn peer-torch-spec; do
        skip "$part" "torch not installed"
    done
fi
log "done in $SECONDS s: $OUT/gpu.json"
