"""Throughput of graph building for the bundled default dataset (structures per second), uncached and cached.

    python benchmarks/graphs.py [--cutoff 5.0] [--repeats 3] [--batch-size 32]

Stages (each timed ``--repeats`` times, median printed):

1. uncached ``MultiTaskDataModule.load_graphs()`` into a fresh cache dir: read and validate records, neighbour lists,
   ``Data`` objects, collate and write the cache; broken down into reading records only
   (``BundledDataset.load``), building graphs only (``build_graphs``), collating (``GraphDataset(graphs)``) and
   writing the cache file (``GraphDataset.save_to``);
2. cached ``load_graphs()`` again with the same cache dir (``GraphDataset.load_from``);
3. one epoch of the training ``DataLoader`` after ``setup()`` (collating batches of ``--batch-size`` structures).

Not a test: the numbers depend on the machine. Nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from equiprop.data.datamodule import DEFAULT_TASKS, MultiTaskDataModule
from equiprop.data.dataset import GraphDataset, build_graphs
from equiprop.data.sources.records_json import BundledDataset
from equiprop.data.tasks import resolve_tasks

GOAL_CACHED = 1000.0  # structures/s
GOAL_UNCACHED = 300.0  # structures/s


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def machine_info() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch_geometric
    import vesin

    return [f"machine: {platform.system()} {platform.machine()}, {cpu}, os.cpu_count()={os.cpu_count()}, "
            f"usable cores={affinity}, torch threads={torch.get_num_threads()}",
            f"python {platform.python_version()}, torch {torch.__version__}, torch_geometric "
            f"{torch_geometric.__version__}, vesin {vesin.__version__}, numpy {np.__version__}, "
            f"default dtype {torch.get_default_dtype()}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cutoff", type=float, default=5.0, help="neighbour-list radius, Å (default 5.0)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per stage; the median is printed (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size for the epoch (default 32)")
    parser.add_argument("--dataset", default="default", help="bundled dataset name (default 'default')")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    tasks = resolve_tasks(DEFAULT_TASKS)
    print("\n".join(machine_info()))
    print(f"dataset: bundled {args.dataset!r}, tasks {', '.join(tasks)}; cutoff {args.cutoff} Å; "
          f"{args.repeats} repeats per stage (median)")

    rows = []  # (stage, times, structures)
    with tempfile.TemporaryDirectory(prefix="equiprop-bench-") as tmp:
        tmp = Path(tmp)

        # 1. uncached: a fresh cache dir on every repeat
        counter = iter(range(args.repeats))

        def uncached():
            dm = MultiTaskDataModule(sources=[BundledDataset(args.dataset)], tasks=list(tasks), cutoff=args.cutoff,
                                     batch_size=args.batch_size, cache_dir=str(tmp / f"fresh{next(counter)}"))
            return dm.load_graphs()

        times, (dataset, report) = timed(uncached, args.repeats)
        assert report["from_cache"] is False
        cache_mb = Path(report["cache_path"]).stat().st_size / 2**20
        num_structures, num_edges = report["num_graphs"], report["num_edges"]
        rows.append(("uncached load_graphs() (read + validate + graphs + cache write)", times, num_structures,
                     GOAL_UNCACHED))

        source = BundledDataset(args.dataset)
        times, result = timed(lambda: source.load(tasks), args.repeats)
        rows.append(("  of which: read + validate records (source.load)", times, result.entries_read, None))
        records = result.records
        times, (graphs, skips) = timed(lambda: build_graphs(records, tasks, args.cutoff), args.repeats)
        rows.append(("  of which: neighbour lists + Data (build_graphs)", times, len(records), None))
        times, collated = timed(lambda: GraphDataset(graphs), args.repeats)
        rows.append(("  of which: collate (GraphDataset(graphs))", times, len(graphs), None))
        times, _ = timed(lambda: collated.save_to(tmp / "save_only.pt"), args.repeats)
        rows.append(("  of which: write cache file (save_to)", times, len(graphs), None))

        # 2. cached: the same cache dir again
        cache_dir = str(tmp / "fresh0")

        def cached():
            dm = MultiTaskDataModule(sources=[BundledDataset(args.dataset)], tasks=list(tasks), cutoff=args.cutoff,
                                     batch_size=args.batch_size, cache_dir=cache_dir)
            return dm.load_graphs()

        times, (cached_dataset, cached_report) = timed(cached, args.repeats)
        assert cached_report["from_cache"] is True and len(cached_dataset) == num_structures
        rows.append(("cached load_graphs() (GraphDataset.load_from)", times, num_structures, GOAL_CACHED))

        # 3. one epoch of the training loader
        dm = MultiTaskDataModule(sources=[BundledDataset(args.dataset)], tasks=list(tasks), cutoff=args.cutoff,
                                 batch_size=args.batch_size, cache_dir=cache_dir)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no summary print
        dm.setup()
        num_train = len(dm.subsets["train"])
        batches = []

        def epoch():
            n = 0
            for batch in dm.train_dataloader():
                n += batch.num_graphs
            batches.append(n)
            return n

        times, _ = timed(epoch, args.repeats)
        assert batches[-1] == num_train
        rows.append((f"train DataLoader epoch (batch {args.batch_size}, num_workers {dm.num_workers})", times,
                     num_train, None))

    num_atoms = dataset.statistics()["num_atoms"]
    print(f"structures: {num_structures} graphs ({result.entries_read} records read, {result.skips.total} skipped; "
          f"{skips.total} without a graph), {num_edges} edges (mean {num_edges / num_structures:.1f} per structure, "
          f"{num_edges / num_atoms:.1f} per atom), {num_atoms} atoms; "
          f"train split {num_train} structures; cache file {cache_mb:.1f} MiB")
    for line in result.skips.lines():
        print(f"  skipped record: {line}")
    for line in skips.lines():
        print(f"  no graph: {line}")
    print()
    header = f"{'stage':<66} {'median s':>9} {'min-max s':>15} {'structures':>10} {'structures/s':>13}  goal"
    print(header)
    print("-" * len(header))
    verdicts = []
    for stage, times, n, goal in rows:
        median = statistics.median(times)
        rate = n / median
        goal_text = ""
        if goal is not None:
            ok = rate >= goal
            verdicts.append(ok)
            goal_text = f">= {goal:,.0f}/s {'met' if ok else 'NOT met'}"
        print(f"{stage:<66} {median:>9.3f} {min(times):>7.3f}-{max(times):<7.3f} {n:>10} {rate:>13,.0f}  {goal_text}")
    print()
    print("goals: >= 1,000 structures/s cached, >= 300 structures/s uncached: "
          + ("all met" if all(verdicts) else "NOT all met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
