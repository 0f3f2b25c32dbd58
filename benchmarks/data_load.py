"""Time and peak memory of reading a full-size (60,000-image) CIFAR-10 archive.

    python benchmarks/data_load.py [--archive PATH] [--keep]

Without --archive, writes one in the official python layout with the fixture
writer (random pixels: incompressible, like the real ones). The load runs in a
fresh interpreter so its peak RSS is the loader's own, not the writer's.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from vggcifar.data import load_cifar
t1 = time.perf_counter()
d = load_cifar(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({
    "import_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB on Linux
    "pixels_mb": round((d.x_train.nbytes + d.x_test.nbytes) / 1e6, 1),
    "train": len(d.x_train), "test": len(d.x_test), "sha256": d.sha256,
}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, help="an existing archive (default: write one)")
    parser.add_argument("--keep", action="store_true", help="keep the written archive")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.archive
        if path is None:
            from vggcifar import fixtures

            path = Path(tmp) / "cifar-10-python.tar.gz"
            fixtures.write_archive(path, *fixtures.random_arrays(50000, 10000), compresslevel=6)
            if args.keep:
                path = Path(path.rename(Path.cwd() / path.name))
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout)
        result.update(archive_mb=round(path.stat().st_size / 1e6, 1), python=platform.python_version(),
                      machine=platform.machine())
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
