"""Sharded screening: one ``equiprop screen`` process against N shard processes (``--shard I/N``) started together on
one work folder, then the merge (the same command without ``--shard``), on the same generated extxyz frames.

    python benchmarks/screen_shards.py --phase1 CKPT [--count 40000] [--shards 2] [--workers 1] [--repeats 3]

Inputs as ``benchmarks/screening.py`` makes them (bundled default crystals, strained and displaced, seed
``--seed``). Each run is timed as a user waits for it (whole commands: start-up, model loading, reading, predicting,
chunk files; the merge reads every chunk and writes the table). Every repeat checks that the merged table is byte
for byte the one-process table. Prints one table: median and spread (min-max) over the repeats, and the speed-up of
the shards (without and with the merge) over one process. Goal: >= 1.7x with 2 shards at ``--workers 1``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screening import base_records, git_commit, perturbed, write_extxyz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def screen_command(inputs: Path, phase1: str, out: Path, workers: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "equiprop.cli", "screen", "--input", str(inputs), "--phase1", phase1, "--output",
            str(out), "--workers", str(workers), *extra]


def timed(commands: list[list[str]]) -> float:
    """Wall seconds of the commands run at once, until the last ends; exits naming a command that fails."""
    start = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    for command, process in zip(commands, processes):
        _, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(f"benchmark: {shlex.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase1", required=True, help="the Phase-1 checkpoint (an invariant model: the fast stage)")
    parser.add_argument("--count", type=int, default=40000, help="extxyz frames")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="--workers of every process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"git commit: {git_commit()}; seed: {args.seed}; phase1: {args.phase1}; {args.count} frames; "
          f"{args.shards} shards; --workers {args.workers}")
    one, shards, merges = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inputs = root / "frames.extxyz"
        write_extxyz(inputs, perturbed(base_records(), args.count, args.seed))
        for repeat in range(args.repeats):
            whole, sharded = root / f"whole{repeat}" / "out.csv", root / f"sharded{repeat}" / "out.csv"
            whole.parent.mkdir()
            sharded.parent.mkdir()
            one.append(timed([screen_command(inputs, args.phase1, whole, args.workers, [])]))
            shards.append(timed([screen_command(inputs, args.phase1, sharded, args.workers,
                                                ["--shard", f"{i}/{args.shards}"]) for i in range(args.shards)]))
            merges.append(timed([screen_command(inputs, args.phase1, sharded, args.workers, [])]))
            identical = whole.read_bytes() == sharded.read_bytes()
            print(f"repeat {repeat}: one process {one[-1]:.1f} s, shards {shards[-1]:.1f} s, merge {merges[-1]:.1f} s; "
                  f"tables byte-identical: {identical}", flush=True)
            if not identical:
                sys.exit("benchmark: the merged table differs from the one-process table")
    with_merge = [s + m for s, m in zip(shards, merges)]
    print(f"\n{'run':<34} {'seconds: median (min-max)':>28} {'frames/s':>9} {'speed-up':>9}")
    for name, values in (("one process", one), (f"{args.shards} shards at once", shards),
                         ("merge", merges), (f"{args.shards} shards + merge", with_merge)):
        rate = args.count / statistics.median(values)
        speedup = "" if values in (one, merges) else f"{statistics.median(one) / statistics.median(values):.2f}x"
        print(f"{name:<34} {spread(values):>28} {rate:9.0f} {speedup:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
