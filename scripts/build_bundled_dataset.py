"""Build the bundled default dataset from the four matminer 0.4.0 CSVs (PyPI-derived; may be shipped).

    python scripts/build_bundled_dataset.py [--data ../shared/data] [--out src/equiprop/data/bundled]

Writes ``default.json.gz`` (merged records with masked labels, in physical units) and ``DATA_CARD.md``, and copies
``tiny_multitask.json``. Takes about a minute (every tensor is checked against its structure's point group).
"""

import argparse
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

from equiprop.data.merge import merge_sources
from equiprop.data.report import merge_summary, source_summary
from equiprop.data.sources.matminer_csv import MatminerCSV
from equiprop.data.tasks import resolve_tasks

TASKS = ["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor", "piezo_tensor"]
FILES = ["dielectric_constant", "elastic_tensor", "piezoelectric_tensor", "flla_2015"]  # merge precedence order
REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "src" / "equiprop" / "data" / "bundled"))
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    tasks = resolve_tasks(TASKS)
    results = [MatminerCSV(str(data / "matminer-0.4.0" / f"{name}.csv.gz")).load(tasks) for name in FILES]
    sources = [source_summary(r) for r in results]  # before merging, which adds labels to kept records
    records, report = merge_sources(results)
    label_counts = Counter(t for r in records for t in r.labels)
    meta = {
        "name": "equiprop default (matminer 0.4.0 / Materials Project)",
        "provenance": "matminer 0.4.0 sdist (PyPI, modified BSD); data from the Materials Project (CC BY 4.0)",
        "units": {t: tasks[t].units for t in TASKS},
        "frames": "every tensor is in the Cartesian frame of its record's cell (for piezoelectric tensors that did not "
                  "fit the POSCAR frame, the cell was rotated to the IEEE-176 frame), symmetrised to the point group",
        "num_records": len(records), "label_counts": dict(label_counts), "sources": sources,
        "merge": merge_summary(report),
    }
    payload = {"meta": meta, "tasks": {t: tasks[t].to_config() for t in TASKS},
               "records": [r.to_dict() for r in records]}
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "default.json.gz", "wt", compresslevel=9) as f:
        json.dump(payload, f, separators=(",", ":"), default=lambda x: round(float(x), 6))
    shutil.copy(data / "tiny_multitask.json", out / "tiny_multitask.json")
    (out / "DATA_CARD.md").write_text(data_card(meta, tasks))
    print(f"wrote {len(records)} records to {out / 'default.json.gz'} "
          f"({(out / 'default.json.gz').stat().st_size / 1e6:.1f} MB)")


def data_card(meta: dict, tasks) -> str:
    rows = "\n".join(f"| {t} | {tasks[t].units} | {tasks[t].kind} | {meta['label_counts'].get(t, 0)} | "
                     f"{tasks[t].description} |" for t in TASKS)
    src = "\n".join(f"| {s['name']} | {s['entries_read']} | {s['records']} | "
                    f"{sum(v['count'] for v in s['labels_skipped'].values())} | {s['provenance']} |" for s in meta["sources"])
    return f"""# Data card: equiprop bundled datasets

## `default.json.gz`

{meta['num_records']} crystals from the Materials Project, merged from the four datasets shipped in the matminer 0.4.0
source package on PyPI (modified BSD licence; the data are the Materials Project's, CC BY 4.0). Each record carries
only the labels it has (masked labels). Built by `scripts/build_bundled_dataset.py` from `../shared/data/matminer-0.4.0`.

Cite the Materials Project (Jain et al., APL Mater. 1, 011002 (2013)) and the dataset papers:
Petousis et al., Sci. Data 4, 160134 (2017) (dielectric); de Jong et al., Sci. Data 2, 150009 (2015) (elastic);
de Jong et al., Sci. Data 2, 150053 (2015) (piezoelectric); Faber et al., Int. J. Quantum Chem. 115, 1094 (2015) (formation energy).

| task | units | kind | labels | description |
|---|---|---|---|---|
{rows}

Labels are stored in physical units; tensors as Cartesian arrays (elastic 3x3x3x3 in GPa, given and returned as 6x6
Voigt, order xx yy zz yz xz xy; piezoelectric 3x3x3 in C/m^2, as 3x6 Voigt). Frames: {meta['frames']}.
Structures come from each file's `poscar` column (flla_2015: its pymatgen `structure`); fractional coordinates are
rounded to 1e-6.

| source | entries read | records | tensor labels dropped | provenance |
|---|---|---|---|---|
{src}

Dropped tensor labels are those not invariant under the structure's point group within 5% (piezoelectric: in
neither the POSCAR frame nor the IEEE frame). Merge: records of one MP id are combined only when their cells agree
within 0.01 Å; {sum(meta['merge']['merged'].values())} were combined and {sum(v['count'] for v in meta['merge']['frame_mismatches'].values())}
kept apart because the cells differ (their ids carry `@<source>`).

## `tiny_multitask.json`

58 structures (<= 10 sites) with masked labels (Ef, Eg, K_VRH, G_VRH, eps_electronic, eps_total, elastic tensor),
derived from the same matminer 0.4.0 files; every tensor fits its structure's frame. For fast tests.
"""


if __name__ == "__main__":
    main()
