"""One internal crystal record, and its constructors from pymatgen, ASE, JARVIS dicts and structure files."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equiprop.data.errors import DataError

MIN_INTERATOMIC_DISTANCE = 0.5  # Å; closer atoms are a broken structure, not physics
MIN_CELL_VOLUME = 1e-3  # Å^3; below this a periodic cell is degenerate
MAX_ATOMIC_NUMBER = 118


@dataclass
class CrystalRecord:
    """A crystal and the labels it has.

    ``labels`` maps task name -> value in physical units (float, or nested list / ndarray for tensors) and holds only
    the labels that are present: a missing label is absent (masked), never NaN.
    """

    id: str
    cell: np.ndarray  # (3, 3) lattice vectors as rows, Å
    positions: np.ndarray  # (num_atoms, 3) Cartesian, Å
    numbers: np.ndarray  # (num_atoms,) atomic numbers
    pbc: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=bool))  # (3,)
    source: str = ""
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        self.cell = np.array(self.cell, dtype=np.float64).reshape(3, 3)  # a copy: pymatgen arrays are read-only
        self.positions = np.array(self.positions, dtype=np.float64).reshape(-1, 3)
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(3)
        if len(self.numbers) != len(self.positions):
            raise DataError(self.id, f"{len(self.numbers)} atomic numbers but {len(self.positions)} positions",
                            "inconsistent structure")

    @property
    def num_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    @property
    def chemical_system(self) -> str:
        """Sorted element symbols joined by '-', e.g. 'O-Si': the grouping key for leakage-free splits."""
        from ase.data import chemical_symbols

        return "-".join(sorted({chemical_symbols[z] for z in self.numbers}))

    @property
    def formula(self) -> str:
        from ase import Atoms

        return Atoms(numbers=self.numbers).get_chemical_formula(mode="metal")

    def validate(self, min_distance: float | None = None) -> "CrystalRecord":
        """Raise DataError for unknown elements, degenerate cells, non-finite or overlapping atoms.
        ``min_distance``: the shortest interatomic distance when already known (e.g. from a graph's edges, which
        always include each atom's nearest neighbour), instead of a neighbour list of its own."""
        self.check_cell()
        self.check_distance(self.min_distance() if min_distance is None else min_distance)
        return self

    def check_cell_only(self) -> "CrystalRecord":
        """``validate`` without the interatomic-distance check, for callers that check it from a graph's edges."""
        self.check_cell()
        return self

    def check_cell(self) -> None:
        """The checks of ``validate`` that need no neighbour list: atoms, elements, finite values, volume."""
        if self.num_atoms == 0:
            raise DataError(self.id, "structure has no atoms", "empty structure")
        bad = self.numbers[(self.numbers < 1) | (self.numbers > MAX_ATOMIC_NUMBER)]
        if len(bad):
            raise DataError(self.id, f"unknown element (atomic number {int(bad[0])})", "unknown element")
        if not (np.isfinite(self.cell).all() and np.isfinite(self.positions).all()):
            raise DataError(self.id, "non-finite cell or positions", "non-finite coordinates")
        if self.pbc.any() and self.volume < MIN_CELL_VOLUME:
            raise DataError(self.id, f"cell has zero volume ({self.volume:.3g} Å^3)", "zero-volume cell")

    def check_distance(self, d_min: float) -> None:
        if d_min < MIN_INTERATOMIC_DISTANCE:
            raise DataError(self.id, f"two atoms are {d_min:.3f} Å apart (< {MIN_INTERATOMIC_DISTANCE} Å)",
                            f"atoms closer than {MIN_INTERATOMIC_DISTANCE} Å")

    def min_distance(self) -> float:
        """Shortest interatomic distance including periodic images (inf for a single isolated atom)."""
        from vesin import NeighborList

        (d,) = NeighborList(cutoff=MIN_INTERATOMIC_DISTANCE + 1e-6, full_list=False).compute(
            self.positions, self.cell, self.pbc, quantities="d"
        )
        return float(d.min()) if len(d) else float("inf")

    # -- conversions ----------------------------------------------------------------------------------------------
    def to_pymatgen(self):
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.cell, pbc=tuple(bool(p) for p in self.pbc)), self.numbers, self.positions,
                         coords_are_cartesian=True)

    def to_ase(self):
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    def to_dict(self, decimals: int = 6) -> dict:
        """Compact JSON-ready dict (fractional coordinates rounded; cell in Å)."""
        frac = np.linalg.solve(self.cell.T, self.positions.T).T if self.pbc.all() else None
        out = {"id": self.id, "source": self.source, "cell": np.round(self.cell, decimals).tolist(),
               "numbers": self.numbers.tolist(), "pbc": self.pbc.tolist(), "labels": _jsonable(self.labels)}
        if frac is not None:
            out["frac"] = np.round(frac, decimals).tolist()
        else:
            out["positions"] = np.round(self.positions, decimals).tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "CrystalRecord":
        try:
            cell = np.asarray(d["cell"], dtype=np.float64).reshape(3, 3)
            positions = np.asarray(d["frac"], dtype=np.float64) @ cell if "frac" in d else d["positions"]
            return cls(id=d["id"], cell=cell, positions=positions, numbers=d["numbers"],
                       pbc=d.get("pbc", [True] * 3), source=d.get("source", ""), labels=dict(d.get("labels", {})))
        except (KeyError, ValueError, TypeError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(str(d.get("id", "?")), f"malformed record ({type(err).__name__}: {err})",
                            "unparseable structure") from None


def _jsonable(labels: dict) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, list, tuple)) else float(v))
            for k, v in labels.items()}


# -- constructors -------------------------------------------------------------------------------------------------
def from_pymatgen(structure, id: str, source: str = "", labels: dict | None = None) -> CrystalRecord:
    if not structure.is_ordered:
        raise DataError(id, "disordered structure (partial occupancies) is not supported",
                        "disordered structure")
    from pymatgen.core.periodic_table import DummySpecies

    dummy = [str(site.specie) for site in structure if isinstance(site.specie, DummySpecies)]
    if dummy:  # pymatgen parses unknown symbols as dummy species (whose Z is meaningless)
        raise DataError(id, f"unknown element {dummy[0]!r}", "unknown element")
    numbers = [site.specie.Z for site in structure]
    return CrystalRecord(id=id, cell=structure.lattice.matrix, positions=structure.cart_coords, numbers=numbers,
                         pbc=np.asarray(structure.lattice.pbc), source=source, labels=dict(labels or {}))


def from_pymatgen_dict(d: dict, id: str, source: str = "", labels: dict | None = None) -> CrystalRecord:
    from pymatgen.core import Structure

    try:
        structure = Structure.from_dict(d)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise DataError(id, f"not a pymatgen Structure dict ({type(err).__name__}: {err})",
                        "unparseable structure") from None
    return from_pymatgen(structure, id, source, labels)


def from_ase(atoms, id: str, source: str = "", labels: dict | None = None) -> CrystalRecord:
    return CrystalRecord(id=id, cell=np.asarray(atoms.cell), positions=atoms.positions, numbers=atoms.numbers,
                         pbc=atoms.pbc, source=source, labels=dict(labels or {}))


def from_jarvis_dict(d: dict, id: str, source: str = "", labels: dict | None = None) -> CrystalRecord:
    """JARVIS atoms dict: ``lattice_mat`` (rows, Å), ``coords``, ``elements``, ``cartesian`` (bool)."""
    from ase.data import atomic_numbers

    try:
        cell = np.asarray(d["lattice_mat"], dtype=np.float64)
        coords = np.asarray(d["coords"], dtype=np.float64).reshape(-1, 3)
        elements = list(d["elements"])
        cartesian = bool(d.get("cartesian", False))
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(id, f"not a JARVIS atoms dict ({type(err).__name__}: {err})",
                        "unparseable structure") from None
    unknown = [e for e in elements if e not in atomic_numbers or atomic_numbers[e] == 0]
    if unknown:
        raise DataError(id, f"unknown element {unknown[0]!r}", "unknown element")
    positions = coords if cartesian else coords @ cell
    return CrystalRecord(id=id, cell=cell, positions=positions, numbers=[atomic_numbers[e] for e in elements],
                         source=source, labels=dict(labels or {}))


def from_text(text: str, fmt: str, id: str, source: str = "", labels: dict | None = None) -> CrystalRecord:
    """Parse CIF or POSCAR text with pymatgen; any parse failure becomes a DataError naming ``id``."""
    from pymatgen.core import Structure

    fmt = {"vasp": "poscar"}.get(fmt.lower(), fmt.lower())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns on every rounded occupancy; errors still raise
            structure = Structure.from_str(text, fmt=fmt)
    except Exception as err:  # pymatgen raises many types (ValueError, IndexError, CifError, ...)
        raise DataError(id, f"cannot parse {fmt.upper()} ({type(err).__name__}: {err})",
                        "unparseable structure") from None
    return from_pymatgen(structure, id, source, labels)


def from_cif_fast(text: str, id: str, source: str = "") -> CrystalRecord | None:
    """A CIF parsed by gemmi (C++, ~40x faster than pymatgen here), or None where gemmi's reading could differ from
    pymatgen's (partial occupancies, unknown elements, anything gemmi rejects): the caller then uses ``from_text``.
    The lattice follows pymatgen's convention (``Lattice.from_parameters``: c along z), so Cartesian tensors come out
    in the same frame; the sites are the same set (tested), possibly in another order."""
    try:
        import gemmi
        from pymatgen.core import Lattice

        small = gemmi.make_small_structure_from_block(gemmi.cif.read_string(text).sole_block())
        sites = small.get_all_unit_cell_sites()
    except Exception:  # noqa: BLE001 - gemmi raises RuntimeError/ValueError/...; pymatgen then reads it or says why
        return None
    numbers = [site.element.atomic_number for site in sites]
    if not sites or any(site.occ != 1.0 for site in sites) or 0 in numbers:
        return None
    cell = Lattice.from_parameters(small.cell.a, small.cell.b, small.cell.c, small.cell.alpha, small.cell.beta,
                                   small.cell.gamma).matrix  # pymatgen's frame, as from_text gives
    frac = np.array([[site.fract.x, site.fract.y, site.fract.z] for site in sites])
    return CrystalRecord(id=id, cell=cell, positions=frac @ cell, numbers=numbers, source=source)


STRUCTURE_SUFFIXES = {".cif": "cif", ".vasp": "poscar", ".poscar": "poscar"}


def structure_format(path: Path) -> str | None:
    """'cif', 'poscar' or 'extxyz' from a file name (POSCAR/CONTCAR by name), else None."""
    name = path.name.lower()
    if name.startswith(("poscar", "contcar")):
        return "poscar"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    return STRUCTURE_SUFFIXES.get(path.suffix.lower())


def read_structure_file(path: str | Path, id: str | None = None, source: str = "", fast_cif: bool = False
                        ) -> list[CrystalRecord]:
    """Read a CIF, POSCAR or extxyz file (extxyz may hold many frames; their ``info`` entries become labels).
    ``fast_cif``: CIFs through gemmi where it reads them as pymatgen would (``from_cif_fast``; screening)."""
    path = Path(path)
    fmt = structure_format(path)
    if fmt is None:
        raise DataError(str(path), "unknown structure file type (expected .cif, POSCAR/.vasp or .xyz/.extxyz)",
                        "unknown file type")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(str(path), f"unreadable file ({err})", "unreadable file") from None
    if fmt == "cif" and fast_cif:
        record = from_cif_fast(text, id or path.stem, source or str(path))
        if record is not None:
            return [record]
    if fmt != "extxyz":
        try:
            return [from_text(text, fmt, id or path.stem, source or str(path))]
        except DataError as err:  # name the file, which is what the user can find and fix
            raise DataError(f"{path}" if id is None else f"{path} ({id})", err.problem, err.kind) from None
    return read_extxyz_text(text, str(path), source or str(path))


def read_extxyz_text(text: str, where: str, source: str) -> list[CrystalRecord]:
    import ase.io

    try:
        frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
    except Exception as err:  # ase raises ValueError/IndexError/KeyError on malformed frames
        raise DataError(where, f"cannot parse extxyz ({type(err).__name__}: {err})",
                        "unparseable structure") from None
    return [frame_record(atoms, i, where, source) for i, atoms in enumerate(frames)]


def iread_extxyz(path: Path, source: str):
    """The frames of an extxyz file one at a time (memory: one frame), as records with their labels."""
    import ase.io

    frames = ase.io.iread(str(path), index=":", format="extxyz")
    i = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as err:  # ase raises ValueError/IndexError/KeyError on malformed frames
            raise DataError(f"{path}[{i}]", f"cannot parse extxyz ({type(err).__name__}: {err})",
                            "unparseable structure") from None
        yield frame_record(atoms, i, str(path), source)
        i += 1


def frame_record(atoms, i: int, where: str, source: str) -> CrystalRecord:
    info = dict(atoms.info)
    frame_id = str(info.pop("id", info.pop("material_id", f"{Path(where).stem}:{i}")))
    per_atom = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}  # per-atom labels
    # ase moves columns and keys it knows (energy, forces, charges, magmoms, stress) into a calculator
    computed = dict(atoms.calc.results) if getattr(atoms, "calc", None) is not None else {}
    return from_ase(atoms, frame_id, source, labels={**computed, **per_atom, **info})


def scan_xyz_frames(path: Path) -> tuple[np.ndarray, str | None]:
    """Byte offsets of each frame's start (and the end) from the atom-count lines, and why the scan stopped early
    (None when the file parses as frames to its end)."""
    offsets, broken = [0], None
    try:
        with path.open("rb") as f:
            while True:
                header = f.readline()
                if not header or not header.strip():
                    break
                try:
                    count = int(header)
                except ValueError:
                    broken = f"cannot parse extxyz (bad atom-count line {header[:40]!r})"
                    break
                lines = [f.readline() for _ in range(count + 1)]  # comment line + atoms
                if not lines[-1]:
                    broken = f"cannot parse extxyz (file ends inside a frame of {count} atoms)"
                    break
                offsets.append(f.tell())
    except OSError as err:
        broken = f"unreadable file ({err})"
    return np.asarray(offsets, dtype=np.int64), broken
