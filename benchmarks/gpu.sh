#!/usr/bin/env bash
# The prepared GPU check: every figure the project wants from one NVIDIA GPU, in
# at most about 8 minutes, as one JSON object in $OUT/gpu.json (each part under
# its name) and the log in $OUT/log.txt ($OUT defaults to gpu-out/).
#
#   bash benchmarks/gpu.sh fetch   # here, with network: the wheels the GPU machine lacks, into .whl/
#   bash benchmarks/gpu.sh         # there: install .whl/ into /tmp/site, then measure
#
# The GPU machine is expected to have Python 3.12 with PyTorch and JAX (CUDA)
# but no Keras and no network: `fetch` downloads Keras and the two packages it
# needs that such an image lacks. The parts, the first two on every backend that
# imports (jax, torch), each with its own time limit:
#   bench-<backend>-spec   the spec recipe, float32, batch 32, with the spec's plain model.fit
#   bench-<backend>-bn     vgg16-bn, bfloat16, batch 256
#   train-jax-k<K>         2 epochs of vgg16-bn on 50,000 synthetic images, K=1 and K=auto steps a call
#   levers-jax-loop        the spec at batch 32: K=1, K=32 calls of one step, and one lax.scan of 32
#   peer-torch-spec/-bn    plain PyTorch VGG-16 (channels_last, bf16 autocast, torch.compile)
# GPU_CHECK_TINY=1 runs the same steps on a tiny network and set (to try the script on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=".whl"
KERAS_VERSION="${KERAS_VERSION:-3.15.1}"
if [ "${1:-}" = "fetch" ]; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
    for pkg in "keras==$KERAS_VERSION" namex optree; do
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "$pkg" || exit 1
    done
    ls -l "$WHEELS"
    exit 0
fi

OUT="${OUT:-gpu-out}"
PARTS=$(mktemp -d)
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    NET=(--width 0.0625 --dense-units 16); SET=(--set width=0.0625 --set dense_units=16)
    LEVERS=(--width 0.0625 --warmup 32 --windows 2 --steps 32); LEVER_IMAGES=512
    IMAGES=512; LIMIT=(--limit-train 512 --limit-test 128); PEER=(--width 0.0625 --dense-units 16 --images 512
        --warmup 2 --windows 2 --steps 2 --no-compile)
else
    NET=(); SET=(); IMAGES=50000; LIMIT=(); PEER=()
    LEVERS=(--warmup 64 --windows 3 --steps 64); LEVER_IMAGES=8192
fi

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
# run NAME SECONDS CMD...: stdout's last JSON line is the part NAME; everything else goes to the log.
# A part that would start after BUDGET seconds is skipped, so the whole check ends in time.
BUDGET="${GPU_CHECK_BUDGET:-420}"
run() {
    local name=$1 limit=$2; shift 2
    if [ "$SECONDS" -gt "$BUDGET" ]; then
        log "$name: skipped, the check's ${BUDGET} s are spent"
        echo '{"skipped": true}' > "$PARTS/$name.json"
        return
    fi
    log "$name: $*"
    local started=$SECONDS
    timeout "$limit" "$@" > "$PARTS/$name.stdout" 2>> "$OUT/log.txt"
    local status=$?
    grep '^{' "$PARTS/$name.stdout" | tail -n 1 > "$PARTS/$name.json"
    [ -s "$PARTS/$name.json" ] || echo "{\"failed\": true, \"status\": $status}" > "$PARTS/$name.json"
    log "$name: exit $status in $((SECONDS - started)) s"
    collect
}
# collect: every part so far into $OUT/gpu.json, rewritten after each part (by
# rename), so that a check cut short still returns what it measured.
collect() {
    "$PY" - "$PARTS" "$OUT/gpu.json" <<'EOF_COLLECT'
import json, os, sys
from pathlib import Path
parts, out = Path(sys.argv[1]), Path(sys.argv[2])
found = {}
for f in sorted(parts.glob("*.json")):
    try:
        found[f.stem] = json.loads(f.read_text() or "null")
    except ValueError as exc:
        found[f.stem] = {"unreadable": str(exc)}
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps(found, indent=1) + "\n")
os.replace(tmp, out)
EOF_COLLECT
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import sys, keras, numpy; print(sys.version.split()[0], 'keras', keras.__version__, 'numpy', numpy.__version__)"
} >> "$OUT/log.txt" 2>&1
# The machine, as the part "machine": the GPU and the versions measured.
"$PY" - > "$PARTS/machine.json" 2>> "$OUT/log.txt" <<'EOF_MACHINE'
import importlib, json, platform, subprocess
info = {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count()}
try:
    info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    info["gpu"] = f"no nvidia-smi ({exc.__class__.__name__})"
for name in ("keras", "jax", "jaxlib", "torch", "numpy"):
    try:
        info[name] = importlib.import_module(name).__version__
    except Exception:
        info[name] = None
print(json.dumps(info))
EOF_MACHINE

bench() {  # bench BACKEND: the spec recipe and vgg16-bn in bfloat16
    local backend=$1
    "$PY" -c "import $backend" 2>/dev/null || { log "$backend: not installed, skipped"; return; }
    KERAS_BACKEND=$backend run "bench-$backend-spec" 90 "$PY" -m vggcifar bench --quick --json --images "$IMAGES" \
        --recipe spec --batch-size 32 --precision float32 "${NET[@]}"
    KERAS_BACKEND=$backend run "bench-$backend-bn" 90 "$PY" -m vggcifar bench --quick --json --no-baseline \
        --images "$IMAGES" --recipe vgg16-bn --batch-size 256 --precision mixed_bfloat16 "${NET[@]}"
}

# Most wanted first: a part that would start after the budget is skipped.
bench jax
for k in 1 auto; do
    KERAS_BACKEND=jax run "train-jax-k$k" 75 "$PY" -m vggcifar train --dataset synthetic "${LIMIT[@]}" \
        --recipe vgg16-bn --epochs 2 --steps-per-execution "$k" --quiet --run-dir "/tmp/gpu-check-k$k" "${SET[@]}"
    "$PY" - "/tmp/gpu-check-k$k" > "$PARTS/train-jax-k$k-run.json" 2>> "$OUT/log.txt" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
history = [dict(zip(rows[0], r)) for r in rows[1:]]
metrics = json.loads((run / "metrics.json").read_text())
config = json.loads((run / "config.json").read_text())
print(json.dumps({"epoch_seconds": [float(h["seconds"]) for h in history], "test_accuracy": metrics["test_accuracy"],
                  "train_images": metrics["train_images"], "steps_per_execution": config["steps_per_execution"],
                  "precision": config["precision"], "batch_size": config["batch_size"]}))
EOF
    collect
done
run peer-torch-bn 45 "$PY" benchmarks/torch_peer.py --batch-size 256 --dense-units 512 --batch-norm "${PEER[@]}"
# K steps a call on JAX: K calls of one compiled step (the runner's loop)
# against one compiled lax.scan over them, the spec network at batch 32.
run levers-jax-loop 100 env KERAS_BACKEND=jax "$PY" benchmarks/levers.py --json --batch-size 32 --images "$LEVER_IMAGES" \
    "${LEVERS[@]}" k1:steps_per_execution=1 k32:steps_per_execution=32 \
    scan32:steps_per_execution=32,jax_loop=scan
bench torch
run peer-torch-spec 45 "$PY" benchmarks/torch_peer.py --batch-size 32 --precision float32 "${PEER[@]}"
log "done: $OUT/gpu.json"
