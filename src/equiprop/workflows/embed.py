"""``equiprop embed``: per-structure latent vectors of a trained encoder, for maps of the learned space.

    equiprop embed --checkpoint CKPT --input INPUTS --output emb.npz
    equiprop embed --checkpoint CKPT --input bundled:default --output emb.npz     (bundled data, with its labels)

The vector of a structure is the mean over its atoms of the encoder's rotation-invariant features: the 0e channels
and the norm of every l > 0 channel, so it does not depend on the orientation of the input. The .npz holds ids,
formulas, crystal systems, the embeddings and every scalar task's label where the inputs carry one (bundled data,
recipes, extxyz ``info``; NaN where missing), with its units. Inputs: ``equiprop.data.inputs``, as every command's;
``--dataset NAME`` is the old spelling of ``--input bundled:NAME``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from itertools import islice
from pathlib import Path

import numpy as np

from equiprop.data.inputs import BUNDLED_PREFIX, INPUT_HELP, InputFailure, read_structures
from equiprop.inference import Predictor
from equiprop.workflows.options import ArgumentParser, positive_int
from equiprop.workflows.predict import check_output


def crystal_system(record) -> str:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return SpacegroupAnalyzer(record.to_pymatgen(), symprec=0.1).get_crystal_system()
        except Exception:  # spglib failures on odd cells: reported as unknown, not fatal
            return "unknown"


def embed_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="equiprop embed", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help=INPUT_HELP)
    source.add_argument("--dataset", choices=["default", "tiny"], help="old spelling of --input bundled:NAME")
    parser.add_argument("--output", required=True, help="emb.npz")
    parser.add_argument("--limit", type=positive_int, help="embed only the first N inputs (N >= 1)")
    args = parser.parse_args(argv)
    check_output(Path(args.output))
    predictor = Predictor.from_checkpoint(args.checkpoint, batch_size=64)
    if args.dataset:
        print(f"equiprop embed: note: --dataset {args.dataset} is now --input {BUNDLED_PREFIX}{args.dataset} (the old "
              "spelling still works)", file=sys.stderr)
        args.input = [BUNDLED_PREFIX + args.dataset]
    plan = read_structures(args.input, tasks=predictor.tasks)
    items = list(islice(plan, args.limit))  # only the first N inputs are read
    records = [item for item in items if not isinstance(item, InputFailure)]
    skipped = plan.notices + [item.error for item in items if isinstance(item, InputFailure)]
    graphs, kept, unusable = predictor.checked_graphs(records, checked=False)  # validity only: a map takes all
    skipped += [str(err) for err in unusable.values()]
    kept = list(kept.values())
    embeddings = predictor.latents(graphs)
    labels = {f"label_{name}": np.array([float(np.mean(r.labels[name])) if name in r.labels and np.ndim(
        r.labels[name]) == 0 else np.nan for r in kept]) for name, t in predictor.tasks.items() if t.rank == 0}
    units = {f"units_{name}": t.units for name, t in predictor.tasks.items()}
    np.savez_compressed(args.output, ids=np.array([r.id for r in kept]), formulas=np.array([r.formula for r in kept]),
                        crystal_systems=np.array([crystal_system(r) for r in kept]), embeddings=embeddings,
                        **labels, **units)
    for message in skipped:
        print(f"equiprop embed: skipped {message}")
    print(f"wrote {len(kept)} embeddings of dimension {embeddings.shape[1] if len(kept) else 0} to {args.output} "
          f"({len(skipped)} skipped)")
    return 0
