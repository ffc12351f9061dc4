"""Scale: building and training on 10k-1M crystals of ~30 atoms with graphs on disk (``data.storage: disk``).

    python benchmarks/scale.py --sizes 10000 100000 1000000 [--batches 40] [--memory-up-to 10000] [--seeds 0 1 2]

The crystals are strained supercells of the bundled structures (each bundled crystal repeated along its shortest
axes to >= 24 atoms, then a random strain of up to 2% and 0.05 Å of noise per atom; Ef label carried over), made on
the fly by a streaming source, so no input file limits the size. Each size runs in its own process (peak memory is
that process's and its workers' maximum resident set): build the store (2 processes encoding, this one writing),
then the statistics pass, then ``--batches`` training batches of the invariant and of the equivariant model
(quickstart size) read from disk; sizes up to ``--memory-up-to`` are also built and trained in memory, to compare
throughput. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from equiprop.data.record import CrystalRecord
from equiprop.data.sources.base import Source, SourceResult, add_entry

MIN_ATOMS = 24


class StrainedSupercells(Source):
    """``count`` crystals made from the bundled ones: supercells of >= 24 atoms, strained and jittered (seeded)."""

    def __init__(self, count: int, seed: int = 0):
        self.count, self.seed, self.name = count, seed, f"strained_supercells:{count}"

    def load(self, tasks) -> SourceResult:  # the in-memory path: every record kept
        result, records = self.stream(tasks)
        result.keep_records = True
        for _ in records:
            pass
        return result

    def stream(self, tasks):
        from equiprop.data.sources.records_json import bundled_path, read_json

        result = SourceResult(self.name, "generated from the bundled dataset", keep_records=False)
        base = [CrystalRecord.from_dict(d) for d in read_json(bundled_path("default"))["records"]]
        base = [(r, r.labels.get("Ef")) for r in base if r.labels.get("Ef") is not None]
        rng = np.random.default_rng(self.seed)

        def records():
            for i in range(self.count):
                record, ef = base[i % len(base)]
                cell, positions, numbers = record.cell, record.positions, record.numbers
                while len(numbers) < MIN_ATOMS:  # double along the shortest lattice vector
                    axis = int(np.argmin(np.linalg.norm(cell, axis=1)))
                    positions = np.concatenate([positions, positions + cell[axis]])
                    numbers = np.concatenate([numbers, numbers])
                    cell = cell.copy()
                    cell[axis] *= 2
                strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
                made = CrystalRecord(f"{record.id}-s{i}", cell @ strain.T,
                                     positions @ strain.T + rng.normal(0, 0.05, positions.shape), numbers)
                kept = add_entry(result, made.id, lambda made=made: made, {"Ef": ef}, tasks)
                if kept is not None:
                    yield kept

        return result, records()


def peak_memory_gb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024 ** 2  # ru_maxrss is in KiB on Linux


def train_throughput(datamodule, encoder: str, batches: int, seed: int = 0) -> float:
    """Structures per second over ``batches`` training batches (after 3 warm-up batches)."""
    import lightning as L

    from equiprop.nn import EquivariantEncoder, InvariantEncoder
    from equiprop.train.module import MultiTaskModel

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 3:
                self.start = time.perf_counter()

    L.seed_everything(seed, verbose=False)
    model = MultiTaskModel(InvariantEncoder(cutoff=4.5) if encoder == "invariant" else EquivariantEncoder(
        cutoff=4.5, max_ell=2, multiplicities=[32, 16, 8], num_layers=2, num_basis=8), ["Ef"])
    clock = Clock()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches + 3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu",
                        callbacks=[clock], enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    return batches * datamodule.batch_size / (time.perf_counter() - clock.start)


def one_size(count: int, storage: str, batches: int, workers: int, seed: int = 0) -> dict:
    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.splits import RandomSplit

    cache = tempfile.mkdtemp(prefix=f"scale_{count}_", dir=str(Path.home() / ".cache"))
    datamodule = MultiTaskDataModule(sources=[StrainedSupercells(count, seed)], tasks=["Ef"], cutoff=4.5,
                                     batch_size=32, split=RandomSplit(0.05, 0.05, seed=seed), storage=storage, cache_dir=cache,
                                     num_workers=workers)
    start = time.perf_counter()
    datamodule.load_graphs()  # the build alone
    build = time.perf_counter() - start
    datamodule.setup("fit")  # split and the streaming statistics pass (from the store just written)
    setup = time.perf_counter() - start - build
    row = {"structures": datamodule.report["num_graphs"], "storage": storage, "build_s": round(build, 1),
           "build_per_s": round(datamodule.report["num_graphs"] / build), "setup_s": round(setup, 1),
           "edges": datamodule.report["num_edges"]}
    for encoder in ("invariant", "equivariant"):
        row[f"{encoder}_per_s"] = round(train_throughput(datamodule, encoder, batches, seed), 1)
    row["peak_gb"] = round(peak_memory_gb(), 2)
    row["disk_gb"] = round(sum(f.stat().st_size for f in Path(cache).iterdir()) / 1e9, 2)
    shutil.rmtree(cache)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--memory-up-to", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed (data jitter, split, weights); several give a mean and standard error")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, metavar=("COUNT", "STORAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(int(args.one[0]), args.one[1], args.batches, args.workers, args.seed)))
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"`python benchmarks/scale.py --sizes {' '.join(map(str, args.sizes))} --batches {args.batches} --seeds "
          f"{' '.join(map(str, args.seeds))}` (commit {commit}, batch 32, DataLoader workers {args.workers})\n")
    print("| structures | storage | seed | build s | built/s | stats pass s | edges | invariant train structures/s "
          "| equivariant train structures/s | peak RAM GB | disk GB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    rates = {}
    for count in args.sizes:
        for seed in args.seeds:
            for storage in (["memory"] if count <= args.memory_up_to else []) + ["disk"]:
                done = subprocess.run([sys.executable, __file__, "--one", str(count), storage, "--batches",
                                       str(args.batches), "--workers", str(args.workers), "--seed", str(seed)],
                                      capture_output=True, text=True)
                if done.returncode:
                    print(f"| {count} | {storage} | {seed} | failed: {done.stderr.strip().splitlines()[-1][:120]} |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                for encoder in ("invariant", "equivariant"):
                    rates.setdefault((count, storage, encoder), []).append(r[f"{encoder}_per_s"])
                print(f"| {r['structures']} | {storage} | {seed} | {r['build_s']} | {r['build_per_s']} | "
                      f"{r['setup_s']} | {r['edges']} | {r['invariant_per_s']} | {r['equivariant_per_s']} | "
                      f"{r['peak_gb']} | {r['disk_gb']} |", flush=True)
    if len(args.seeds) > 1:
        print("\n| structures | storage | model | train structures/s, mean ± standard error |\n|---|---|---|---|")
        for (count, storage, encoder), values in rates.items():
            print(f"| {count} | {storage} | {encoder} | {np.mean(values):.1f} ± "
                  f"{np.std(values, ddof=1) / np.sqrt(len(values)):.1f} (n={len(values)}) |")

if __name__ == "__main__":
    main()
