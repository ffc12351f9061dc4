"""Write rattled and strained metal crystals labelled by ase's EMT potential (energy, forces, stress) as extxyz.

The energy-and-forces recipe (``recipes/forces_emt.yaml``) trains on these frames: a physical potential
(effective-medium theory, Jacobsen et al. 1996) whose forces and stress are exact derivatives of its energy, so a
model can be checked against them. EMT covers Al, Ni, Cu, Pd, Ag, Pt and Au; the frames are fcc elements and
ordered alloys (L1_2 and L1_0) at random strains and displacements.

    python scripts/emt_frames.py --output runs/data/emt_frames.extxyz --frames 400 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
LATTICE = {"Al": 4.05, "Ni": 3.52, "Cu": 3.61, "Pd": 3.89, "Ag": 4.09, "Pt": 3.92, "Au": 4.08}  # fcc a, Å


def conventional_cell(symbols: list[str]):
    """A 4-atom cubic fcc cell with these species at (0,0,0), (0,½,½), (½,0,½), (½,½,0); lattice by Vegard's law."""
    from ase import Atoms

    a = float(np.mean([LATTICE[s] for s in symbols]))
    fractional = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return Atoms(symbols, scaled_positions=fractional, cell=np.eye(3) * a, pbc=True)


def frame(rng: np.random.Generator, max_strain: float, rattle: float):
    """One labelled frame: a random element or ordered alloy, repeated, strained and rattled."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    a, b = rng.choice(METALS, size=2, replace=False)
    symbols = [[a] * 4, [a, b, b, b], [a, a, b, b]][rng.integers(3)]  # element, L1_2, L1_0
    atoms = conventional_cell(list(symbols)).repeat(tuple(rng.integers(1, 3, size=3)))
    strain = rng.uniform(-max_strain, max_strain, size=(3, 3))
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, size=atoms.positions.shape)
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
    atoms.calc = SinglePointCalculator(atoms, **results)  # eV, eV/Å, eV/Å^3 (Voigt xx yy zz yz xz xy)
    return atoms


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/data/emt_frames.extxyz"))
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--max-strain", type=float, default=0.03, help="largest strain component")
    parser.add_argument("--rattle", type=float, default=0.08, help="standard deviation of displacements, Å")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import ase.io

    rng = np.random.default_rng(args.seed)
    frames = [frame(rng, args.max_strain, args.rattle) for _ in range(args.frames)]
    for i, atoms in enumerate(frames):
        atoms.info["id"] = f"emt-{args.seed}-{i}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(args.output)
    print(f"wrote {len(frames)} frames ({sum(len(f) for f in frames)} atoms) to {args.output}: energy eV, forces "
          "eV/Å, stress eV/Å^3 (EMT)")


if __name__ == "__main__":
    main()
