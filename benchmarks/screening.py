"""Screening throughput: ``equiprop screen`` Phase 1 only, end to end, on generated inputs.

    python benchmarks/screening.py [--phase1 CKPT] [--cif 5000] [--extxyz 10000] [--large 100000] [--db 5000]
                                   [--workers 2] [--batch-size 64] [--seed 0] [--keep DIR]

Inputs are made here, deterministically from ``--seed``: the bundled default crystals (5,909), each copy strained
(symmetric strain, components ~N(0, 0.01)) and its atoms displaced (~N(0, 0.01) Å), written as CIF files (one per
structure, pymatgen's CifWriter), an extxyz file, an ASE database; plus ``bundled:default`` itself. Each row runs
``equiprop screen`` as a subprocess and times the whole command (start-up, model loading, reading, predicting and
writing the table: what a user waits for). ``phase-1 s`` / ``phase-1 /s`` are the Phase-1 stage alone, from the
summary JSON: reading and parsing the inputs, checks, graphs, inference and chunk files, without the command's fixed
start-up (imports, model loading: ~5-10 s) and the final table. The rate goals are judged on the Phase-1 stage
rate; the 100,000-structure goal on the whole command's wall time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"cif": 300.0, "bundled": 1000.0, "extxyz": 1000.0, "ase.db": 1000.0}
LARGE_SECONDS = 360.0  # per 100,000 structures: 100,000 through Phase 1 in under 6 minutes


def base_records():
    from equiprop.data.inputs import Bundled

    bundled = Bundled("default")
    return list(bundled.read(0, len(bundled)))


def perturbed(records, count: int, seed: int):
    """``count`` strained / displaced copies of the records, cycling through them (CrystalRecords)."""
    from equiprop.data.record import CrystalRecord

    rng = np.random.default_rng(seed)
    for i in range(count):
        base = records[i % len(records)]
        strain = rng.normal(0.0, 0.01, (3, 3))
        deform = np.eye(3) + 0.5 * (strain + strain.T)
        positions = base.positions @ deform + rng.normal(0.0, 0.01, base.positions.shape)
        yield CrystalRecord(f"{base.id}-p{i}", base.cell @ deform, positions, base.numbers)


def pymatgen_parse_seconds(folder: Path) -> float:
    """Seconds to parse every CIF of ``folder`` with pymatgen alone, one process: the reference of the CIF goal."""
    import warnings

    from pymatgen.core import Structure

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(folder.glob("*.cif")):
            Structure.from_file(path)
    return time.perf_counter() - start


def write_cifs(folder: Path, records) -> None:
    from pymatgen.io.cif import CifWriter

    folder.mkdir()
    for r in records:
        (folder / f"{r.id}.cif").write_text(str(CifWriter(r.to_pymatgen())))


def write_extxyz(path: Path, records) -> None:
    """Plain extxyz (Lattice, species, positions), written directly: ase.io.write takes minutes for 100k frames."""
    from ase.data import chemical_symbols

    with path.open("w") as f:
        for r in records:
            lattice = " ".join(f"{x:.8f}" for x in r.cell.reshape(-1))
            f.write(f'{r.num_atoms}\nLattice="{lattice}" Properties=species:S:1:pos:R:3 id={r.id} pbc="T T T"\n')
            f.writelines(f"{chemical_symbols[z]} {x:.8f} {y:.8f} {w:.8f}\n" for z, (x, y, w) in
                         zip(r.numbers, r.positions))


def write_db(path: Path, records) -> None:
    import ase.db

    with ase.db.connect(str(path)) as db:  # one transaction
        for r in records:
            db.write(r.to_ase(), material_id=r.id)


def run_screen(inputs: list[str], phase1: str, out: Path, workers: int, batch_size: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "equiprop.cli", "screen", "--input", *inputs, "--phase1", phase1, "--output",
               str(out), "--workers", str(workers), "--batch-size", str(batch_size)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = []
    sampler = threading.Thread(target=sample_tree_rss, args=(process.pid, peaks), daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"benchmark: {shlex.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    summary["peak_rss_gb"] = max(peaks, default=0.0) / 1e9
    summary["rss_samples_gb"] = [p / 1e9 for p in peaks]
    return wall, summary


def sample_tree_rss(pid: int, peaks: list, every: float = 0.5) -> None:
    """Append, every ``every`` s until ``pid`` exits, the summed proportional set size (PSS: pages shared by the
    forked workers counted once in all) of it and its descendants (the screen process, its DataLoader workers):
    the memory a user's machine must have."""
    import psutil

    try:
        root = psutil.Process(pid)
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            peaks.append(total)
            time.sleep(every)
    except psutil.Error:
        return


def rss_growth(samples: list[float]) -> str:
    """Peak memory (PSS) in the second half of the run minus that of the first half (flat memory: ~0)."""
    if len(samples) < 4:
        return "-"
    half = len(samples) // 2
    return f"{max(samples[half:]) - max(samples[:half]):+.2f}"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase1", default=str(ROOT / "runs/baseline_invariant_s0/best.ckpt"))
    parser.add_argument("--cif", type=int, default=5000, help="CIF files (0: skip)")
    parser.add_argument("--extxyz", type=int, default=10000, help="frames in the extxyz file (0: skip)")
    parser.add_argument("--db", type=int, default=5000, help="rows in the ASE database (0: skip)")
    parser.add_argument("--large", type=int, default=100000, help="frames of the large extxyz run (0: skip)")
    parser.add_argument("--bundled", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="folder for the generated inputs and outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    if not Path(args.phase1).is_file():
        print(f"benchmark: error: Phase-1 checkpoint {args.phase1} not found; train it (equiprop fit -c "
              "recipes/baseline_invariant.yaml --run_name=baseline_invariant_s0) or give --phase1 CKPT",
              file=sys.stderr)
        return 2
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"git commit: {git_commit()}; seed: {args.seed}; phase1: {args.phase1}")
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        folder = Path(tmp)
        records = base_records()
        runs = []  # (kind, structures, inputs, goal: structures/s of Phase 1, None: the large run's time)
        parse_alone = None
        if args.cif:
            write_cifs(folder / "cifs", perturbed(records, args.cif, args.seed))
            runs.append(("cif", args.cif, [str(folder / "cifs")], GOALS["cif"]))
            parse_alone = pymatgen_parse_seconds(folder / "cifs")
        if args.bundled:
            runs.append(("bundled", len(records), ["bundled:default"], GOALS["bundled"]))
        if args.extxyz:
            write_extxyz(folder / "small.extxyz", perturbed(records, args.extxyz, args.seed))
            runs.append(("extxyz", args.extxyz, [str(folder / "small.extxyz")], GOALS["extxyz"]))
        if args.db:
            write_db(folder / "small.db", perturbed(records, args.db, args.seed))
            runs.append(("ase.db", args.db, [str(folder / "small.db")], GOALS["ase.db"]))
        if args.large:
            write_extxyz(folder / "large.extxyz", perturbed(records, args.large, args.seed))
            runs.append(("extxyz (large)", args.large, [str(folder / "large.extxyz")], None))
        rows = []
        for n, (kind, count, inputs, goal) in enumerate(runs):
            wall, summary = run_screen(inputs, args.phase1, folder / f"out{n}.csv", args.workers, args.batch_size)
            phase = summary["phase1"]
            large_seconds = LARGE_SECONDS * count / 100_000
            ok = phase["structures_per_second"] >= goal if goal else wall < large_seconds
            rows.append([kind, count, args.workers, args.batch_size, f"{wall:.1f}", f"{count / wall:.0f}",
                         f"{summary['peak_rss_gb']:.2f}", rss_growth(summary["rss_samples_gb"]),
                         f"{phase['seconds']:.1f}", f"{phase['structures_per_second']:.0f}", phase["failed"],
                         f">= {goal:g}/s" if goal else f"< {large_seconds:g} s", "PASS" if ok else "FAIL"])
            print(f"  {kind}: {count} structures in {wall:.1f} s", file=sys.stderr)
    header = ["input kind", "structures", "workers", "batch size", "wall s", "structures/s", "peak PSS GB",
              "PSS 2nd half - 1st half GB", "phase-1 s",
              "phase-1 /s", "failed", "goal", "result"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    if parse_alone is not None:
        cif = next(r for r in rows if r[0] == "cif")
        ratio = float(cif[header.index("phase-1 s")]) / parse_alone
        print(f"\nCIF: parsing the {args.cif} files alone with pymatgen (one process, Structure.from_file): "
              f"{parse_alone:.1f} s; Phase 1 takes {ratio:.2f}x that (goal <= 1.5x: {'PASS' if ratio <= 1.5 else 'FAIL'})")
    return 0 if all(r[-1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
