"""Foundation features on disk: writing and reading the per-structure feature cache at Materials Project size.

    python benchmarks/feature_store.py [--structures 150000] [--read-batches 2000] [--batch-size 32]

Rows the size of SevenNet-0's frozen output (1,344 float32 per atom, 5.4 KB; 24-36 atoms per structure, seeded) are
written through ``FeatureCache.put`` one training batch at a time, then read back in shuffled batches by a fresh
process (cold: nothing in memory, the file's pages as the OS left them) with the default memory bound. Each phase
runs in its own process, so its peak memory (max RSS) is its own. The previous format loaded every shard whole:
its memory was the cache's size (the "disk" column). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from equiprop.nn.feature_cache import FeatureCache

FEATURES_PER_ATOM = 1344  # 640x0e+64x1e+32x2e+64x1o+32x2o: SevenNet-0's frozen output
NAMESPACE = {"encoder": "benchmark", "weights": "synthetic"}


def atoms(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(24, 37, size=count)


def write(root: str, count: int, batch_size: int) -> dict:
    cache, sizes = FeatureCache(root, NAMESPACE), atoms(count)
    block = torch.randn(36, FEATURES_PER_ATOM, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        cache.put({f"s{i}": block[:int(sizes[i])] + float(i) for i in range(first, min(first + batch_size, count))})
    return {"seconds": time.perf_counter() - start}


def read(root: str, count: int, batch_size: int, batches: int) -> dict:
    cache, order = FeatureCache(root, NAMESPACE), np.random.default_rng(1).permutation(count)
    sizes, start, nbytes = atoms(count), time.perf_counter(), 0
    for b in range(min(batches, count // batch_size)):
        wanted = order[b * batch_size:(b + 1) * batch_size]
        rows = cache.get_many([f"s{i}" for i in wanted])
        for i, row in zip(wanted, rows):  # the right rows, not just some rows
            assert row is not None and row.shape == (sizes[i], FEATURES_PER_ATOM) and float(row[0, 0]) != 0.0
            nbytes += row.nbytes
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "structures": (b + 1) * batch_size, "bytes": nbytes,
            "memory_limit_mb": cache.memory_limit / 2 ** 20}


def phase(args, name: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", name, "--root", args.root, "--structures",
                          str(args.structures), "--batch-size", str(args.batch_size), "--read-batches",
                          str(args.read_batches)], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=150_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--read-batches", type=int, default=2000)
    parser.add_argument("--root", default=None, help="cache folder (default: a temporary one, deleted after)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = (write(args.root, args.structures, args.batch_size) if args.one == "write"
                  else read(args.root, args.structures, args.batch_size, args.read_batches))
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    temporary = args.root is None
    args.root = args.root or tempfile.mkdtemp(prefix="feature_store_")
    try:
        written, read_back = phase(args, "write"), phase(args, "read")
        disk = sum(p.stat().st_size for p in Path(args.root).rglob("*") if p.is_file())
        print(f"torch {torch.__version__}; {args.structures:,} structures, {int(atoms(args.structures).sum()):,} atoms, "
              f"{FEATURES_PER_ATOM} float32 features per atom; batch {args.batch_size}; "
              f"memory bound {read_back['memory_limit_mb']:.0f} MB")
        print("| structures | disk GB | write structures/s | write peak MB | read structures/s | read MB/s "
              "| read peak MB |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.structures:,} | {disk / 1e9:.1f} | {args.structures / written['seconds']:,.0f} | "
              f"{written['peak_mb']:,.0f} | {read_back['structures'] / read_back['seconds']:,.0f} | "
              f"{read_back['bytes'] / read_back['seconds'] / 1e6:,.0f} | {read_back['peak_mb']:,.0f} |")
    finally:
        if temporary:
            import shutil
            shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()
