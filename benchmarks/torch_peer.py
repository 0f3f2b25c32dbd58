"""The peer to beat on a GPU: VGG-16 for CIFAR written directly in PyTorch, as
a speed-minded PyTorch user trains it, timed on synthetic CIFAR-shaped data.

The whole uint8 set on the GPU, each batch gathered and scaled there,
channels_last memory, bfloat16 autocast (float32 weights), SGD with Nesterov
momentum, the step compiled with ``torch.compile``; images/s is the median of
timed windows after a warm-up that holds the compilation. A compilation that
fails (inductor needs a C compiler) or takes longer than ``--compile-seconds``
is dropped for eager steps, and the JSON object it prints says so.

    python benchmarks/torch_peer.py --batch-size 256 --dense-units 512 --batch-norm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import time

LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def build(torch, width: float, dense_units: int, batch_norm: bool, num_classes: int = 10):
    from torch import nn

    layers, cin = [], 3
    for v in LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        cout = max(1, round(v * width))
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        cin = cout
    layers += [nn.Flatten(), nn.Linear(cin, dense_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
               nn.Linear(dense_units, dense_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
               nn.Linear(dense_units, num_classes)]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise TimeoutError in the main thread if the block runs longer than ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--dense-units", type=int, default=4096)
    p.add_argument("--batch-norm", action="store_true")
    p.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-seconds", type=float, default=45,
                   help="the most torch.compile may take (the warm-up's first steps); then eager steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps (the compilation)")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps", type=int, default=50, help="steps per window")
    args = p.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    x_all = torch.randint(0, 256, (args.images, 32, 32, 3), dtype=torch.uint8, generator=gen).to(device)
    y_all = torch.randint(0, 10, (args.images,), generator=gen).to(device)
    model = build(torch, args.width, args.dense_units, args.batch_norm).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    dtype = torch.bfloat16 if args.precision == "bfloat16" else torch.float32

    def step(rows):
        x = x_all[rows].permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(model(x), y_all[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    perm = torch.randperm(args.images, device=device)
    position = [0]

    def run(steps: int, fn) -> None:
        losses = []
        for _ in range(steps):
            start = position[0] % (args.images - args.batch_size)
            losses.append(fn(perm[start:start + args.batch_size]))
            position[0] += args.batch_size
        float(torch.stack(losses).sum())  # one host read: waits for the GPU

    t0 = time.perf_counter()
    compiled, how = False, "off (--no-compile)"
    if not args.no_compile:
        try:
            with deadline(args.compile_seconds):
                fast = torch.compile(step)
                run(2, fast)  # compiles
            step, compiled, how = fast, True, f"compiled in {time.perf_counter() - t0:.1f} s"
        except Exception as exc:  # no C compiler, an inductor error, or too slow
            torch._dynamo.reset()
            how = f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): eager steps"
    run(args.warmup, step)
    warmup = time.perf_counter() - t0
    rates = []
    for _ in range(args.windows):
        t0 = time.perf_counter()
        run(args.steps, step)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - t0))
    print(json.dumps({
        "peer": "plain PyTorch VGG-16 (channels_last, autocast, torch.compile where it works, data on the device)",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__, "batch_size": args.batch_size, "precision": args.precision,
        "batch_norm": args.batch_norm, "dense_units": args.dense_units, "width": args.width,
        "compiled": compiled, "compile": how, "warmup_seconds": warmup,
        "images_per_second": statistics.median(rates), "min": min(rates), "max": max(rates), "windows": len(rates),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
