"""Speed of the pretrained path: a shipped model predicting CIF files from a cold start, and SevenNet featurisation.

    python benchmarks/pretrained.py [--model equiprop-mp-v1] [--cifs 100] [--structures 256] [--repeats 2]
    python benchmarks/pretrained.py --backbones 7net-0 7net-l3i5 7net-mf-0 chgnet-0.3.0 7net-0+chgnet-0.3.0

1. ``equiprop predict --model NAME`` on N CIF files (written from the bundled data's test split, crystals the model
   never saw) from a cold start: a new process with an empty feature cache, timed as a user's shell would time it
   (wall clock, start-up and imports included); ``equiprop --help`` and ``import equiprop.cli`` alone beside it.
2. Featurisation (FoundationEncoder, frozen SevenNet-0, batch 32) in structures/s on the bundled data: with the
   parity pass as before (the potential on the crystal and on its inversion), with the inversion shortcut
   (centrosymmetric crystals skip the inverted pass), and without parity (one pass).
Prints a table; goals (issue 16): 100 CIFs <= 20 s wall, featurisation >= 2x the ~15 structures/s measured before.
3. ``--backbones``: each backbone (``a+b``: several side by side) alone, as a fit featurises with it (parity, the
   inversion shortcut, batch 32), each in a fresh process: structures/s and the process's peak resident memory.
4. ``--limit``: the limit, SevenNet-0 run by its own package in batches on the same structures (``sevenn``'s
   batched inference: ``set_is_batch_data(True)``, its own graphs, torch_geometric batches of 32; graph building
   excluded, as ours), with its forces and stress (what its inference computes) and energy only (its
   ``force_output`` module removed), beside our featurisation of the same batches.
5. ``--compile``: our O(3) featurisation (parity, inversion shortcut) eager and with ``compile_layers`` (SevenNet's
   layers through torch.compile, inductor): the one-off compilation's seconds, structures/s of each (median of the
   repeats, interleaved), and the largest difference of the features from the eager ones. ``--limit --compile``:
   the limit's table with our compiled passes added.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "equiprop" / "data" / "bundled" / "default.json.gz"
BEFORE = 15.0  # structures/s of featurisation before this work (issue 16; benchmarks/speed.py foundation_uncached)


def bundled_records(ids: list[str] | None = None) -> list[dict]:
    records = json.loads(gzip.open(BUNDLED).read())["records"]
    if ids is None:
        return records
    wanted = set(ids)
    return [r for r in records if r["id"] in wanted]


def write_cifs(folder: Path, count: int, model: str) -> list[Path]:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    from equiprop.shipped import SHIPPED_ROOT

    test_ids = (SHIPPED_ROOT / model / "split" / "test.txt").read_text().split()
    paths = []
    for record in bundled_records(test_ids)[:count]:
        path = folder / f"{record['id']}.cif"
        CifWriter(Structure(Lattice(record["cell"]), record["numbers"], record["frac"])).write_file(path)
        paths.append(path)
    return paths


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def cold_start(model: str, count: int, repeats: int) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifs"
        folder.mkdir()
        paths = write_cifs(folder, count, model)
        for label, command in [("import equiprop.cli", [sys.executable, "-c", "import equiprop.cli"]),
                               ("equiprop --help", [sys.executable, "-m", "equiprop.cli", "--help"]),
                               (f"equiprop predict --model {model}, {len(paths)} CIFs",
                                [sys.executable, "-m", "equiprop.cli", "predict", "--model", model, "--input",
                                 str(folder), "--output", str(Path(tmp) / "out.csv")])]:
            times = []
            for _ in range(repeats):
                env = dict(os.environ, EQUIPROP_CACHE=tempfile.mkdtemp(dir=tmp))  # cold: an empty feature cache
                times.append(timed(command, env))
            rows.append((label, " / ".join(f"{t:.1f} s" for t in times)))
    return rows


def bundled_batches(count: int):
    """(records, crystals, batches of 32 graphs at SevenNet's 5 Å cutoff) of the first ``count`` bundled structures."""
    from torch_geometric.data import Batch

    from equiprop.data.graph import record_to_graph
    from equiprop.data.record import CrystalRecord

    records = bundled_records()[:count]
    crystals = [CrystalRecord(r["id"], np.array(r["cell"]), np.array(r["frac"]) @ np.array(r["cell"]), r["numbers"])
                for r in records]
    batches = [Batch.from_data_list([record_to_graph(c, {}, 5.0) for c in crystals[i:i + 32]])
               for i in range(0, len(crystals), 32)]
    return records, crystals, batches


def best_rate(encoder, batches, count: int, repeats: int) -> float:
    """Structures/s of ``encoder`` over ``batches`` (``count`` structures): the best of ``repeats`` after a warm-up."""
    import torch

    best = 0.0
    with torch.no_grad():
        encoder(batches[0])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                encoder(batch)
            best = max(best, count / (time.perf_counter() - start))
    return best


def featurisation(count: int, repeats: int) -> list[tuple[str, str]]:
    from equiprop.data.symmetry import inversion_permutation
    from equiprop.nn import FoundationEncoder

    records, crystals, batches = bundled_batches(count)
    centred = sum(inversion_permutation(c.cell, np.array(r["frac"]), np.array(c.numbers)) is not None
                  for c, r in zip(crystals, records))
    rows = []
    for label, parity, shortcut in [("parity, two passes (before)", True, False),
                                    ("parity, inversion shortcut", True, True), ("no parity (one pass)", False, True)]:
        encoder = FoundationEncoder(parity=parity, cache_features=False, inversion_shortcut=shortcut)
        best = best_rate(encoder, batches, len(crystals), repeats)
        rows.append((f"featurisation: {label}", f"{best:.1f} structures/s ({best / BEFORE:.2f}x the ~{BEFORE:.0f}/s "
                                                 "before)"))
    rows.append(("centrosymmetric crystals among them", f"{centred} of {len(crystals)}"))
    return rows


def sevenn_batches(crystals, cutoff: float, size: int = 32):
    """SevenNet's own graphs of the crystals (``unlabeled_atoms_to_graph``), batched by torch_geometric as its
    ``sevenn inference`` batches them."""
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from torch_geometric.loader import DataLoader

    graphs = [AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(c.to_ase(), cutoff)) for c in crystals]
    return list(DataLoader(graphs, batch_size=size, shuffle=False))


def limit_rows(count: int, repeats: int, compiled: bool = False) -> list[tuple[str, str]]:
    """sevenn's own batched forward on the bundled structures (with and without forces) beside ours (and, with
    ``compiled``, ours with ``compile_layers``, its compilation in the warm-up)."""
    import warnings

    import torch
    from sevenn.util import load_checkpoint

    from equiprop.nn import FoundationEncoder
    from equiprop.nn.backbones import build_backbone

    _, crystals, batches = bundled_batches(count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_checkpoint(str(build_backbone("7net-0").weights_path())).build_model()
    model.set_is_batch_data(True)
    model.eval()
    theirs = sevenn_batches(crystals, float(model.cutoff))

    def rate(forward, items, grad: bool) -> list[float]:  # structures/s of each repeat, after a warm-up
        rates = []
        with torch.set_grad_enabled(grad):
            forward(items[0])
            for _ in range(repeats):
                start = time.perf_counter()
                for item in items:
                    forward(item)
                rates.append(len(crystals) / (time.perf_counter() - start))
        return rates

    rows = [("sevenn's own batched forward (energy, forces, stress)", rate(lambda b: model(b.clone()), theirs, True))]
    model.delete_module_by_key("force_output")
    rows.append(("sevenn's own batched forward (energy only)", rate(lambda b: model(b.clone()), theirs, False)))
    ours = [("ours: SevenNet-0 features, parity + inversion shortcut", True, False),
            ("ours: SevenNet-0 features, no parity (one pass)", False, False)]
    ours += [("ours: parity + inversion shortcut, compile_layers", True, True),
             ("ours: no parity (one pass), compile_layers", False, True)] if compiled else []
    for label, parity, compile_layers in ours:
        encoder = FoundationEncoder(parity=parity, cache_features=False, inversion_shortcut=True,
                                    compile_layers=compile_layers)
        rows.append((label, rate(encoder, batches, False)))
    limit = float(np.median(rows[1][1]))
    return [(label, f"{np.median(v):.1f} structures/s (median of {len(v)}, {min(v):.1f}-{max(v):.1f}; "
                    f"{np.median(v) / limit:.2f}x the energy-only limit)") for label, v in rows]


def one_backbone(names: list[str], count: int, repeats: int) -> dict:
    """Structures/s of FoundationEncoder(model=names) on ``count`` bundled structures, and the peak RSS (MiB)."""
    import resource

    from equiprop.nn import FoundationEncoder

    _, crystals, batches = bundled_batches(count)
    encoder = FoundationEncoder(model=names if len(names) > 1 else names[0], cache_features=False)
    best = best_rate(encoder, batches, len(crystals), repeats)
    return {"per_s": best, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "features": str(encoder.irreps_out)}


def backbone_rows(specs: list[str], count: int, repeats: int) -> list[tuple[str, str]]:
    rows = []
    for spec in specs:
        done = subprocess.run([sys.executable, __file__, "--one-backbone", spec, "--structures", str(count),
                               "--repeats", str(repeats)], cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{spec} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((f"featurisation {spec} ({result['features']})",
                     f"{result['per_s']:.1f} structures/s, peak memory {result['peak_mib']:.0f} MiB"))
    return rows


def compile_rows(count: int, repeats: int) -> list[tuple[str, str]]:
    import torch

    from equiprop.nn import FoundationEncoder

    _, crystals, batches = bundled_batches(count)
    eager = FoundationEncoder(cache_features=False)
    compiled = FoundationEncoder(cache_features=False, compile_layers=True)
    with torch.no_grad():
        start = time.perf_counter()
        first = compiled(batches[0])
        seconds = time.perf_counter() - start
        worst = max(float((compiled(b) - eager(b)).abs().max() / eager(b).abs().max()) for b in batches)
        assert torch.isfinite(first).all()
        rates: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(repeats):  # interleaved: the machine's state changes alike for both
            for label, encoder in (("eager", eager), ("compiled", compiled)):
                start = time.perf_counter()
                for batch in batches:
                    encoder(batch)
                rates[label].append(len(crystals) / (time.perf_counter() - start))
    median = {k: float(np.median(v)) for k, v in rates.items()}
    spread = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in rates.items()}
    return [("first compiled batch (compilation)", f"{seconds:.1f} s"),
            ("largest feature difference, compiled vs eager (relative to the largest feature)", f"{worst:.1e}"),
            ("featurisation, eager (O(3), inversion shortcut)",
             f"{median['eager']:.1f} structures/s ({spread['eager']})"),
            ("featurisation, compile_layers", f"{median['compiled']:.1f} structures/s ({spread['compiled']}; "
                                              f"{median['compiled'] / median['eager']:.2f}x)"),
            ("structures after which the compilation has paid",
             f"{seconds / (1 / median['eager'] - 1 / median['compiled']):.0f}"
             if median["compiled"] > median["eager"] else "never")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="equiprop-mp-v1")
    parser.add_argument("--cifs", type=int, default=100)
    parser.add_argument("--structures", type=int, default=256, help="bundled structures to featurise")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", help="measure these backbones only (a+b: side by side)")
    parser.add_argument("--limit", action="store_true", help="sevenn's own batched forward beside ours only")
    parser.add_argument("--compile", action="store_true", help="compile_layers against eager featurisation only")
    parser.add_argument("--one-backbone", help=argparse.SUPPRESS)  # the measuring child process
    args = parser.parse_args()
    import torch

    if args.one_backbone:
        print(json.dumps(one_backbone(args.one_backbone.split("+"), args.structures, args.repeats)))
        return 0
    if args.limit:
        rows = limit_rows(args.structures, args.repeats, compiled=args.compile)
    elif args.compile:
        rows = compile_rows(args.structures, args.repeats)
    elif args.backbones:
        rows = backbone_rows(args.backbones, args.structures, args.repeats)
    else:
        rows = cold_start(args.model, args.cifs, args.repeats) + featurisation(args.structures, args.repeats)
    width = max(len(label) for label, _ in rows)
    print(f"{'measurement':<{width}}  result   (torch threads {torch.get_num_threads()}, {os.cpu_count()} cores)")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
