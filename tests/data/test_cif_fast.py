"""gemmi's CIF reading (screening) against pymatgen's on the same files: the same lattice in the same Cartesian
frame and the same set of sites; disordered CIFs fall back to pymatgen."""

import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from equiprop.data.record import from_cif_fast, from_text, read_structure_file


def _same_sites(a, b) -> bool:
    """Same atoms at the same fractional positions modulo lattice translations, in any order."""
    frac_a = np.linalg.solve(a.cell.T, a.positions.T).T
    frac_b = np.linalg.solve(b.cell.T, b.positions.T).T
    if sorted(a.numbers) != sorted(b.numbers):
        return False
    for z, f in zip(a.numbers, frac_a):
        d = (frac_b - f + 0.5) % 1 - 0.5
        if not ((np.abs(d).max(1) < 1e-5) & (b.numbers == z)).any():
            return False
    return True


def test_gemmi_reads_symmetrised_cifs_as_pymatgen_does(tiny_entries):
    texts = [str(CifWriter(Structure.from_dict(e["structure"]), symprec=0.1)) for e in tiny_entries]
    texts += [str(CifWriter(Structure.from_dict(e["structure"]))) for e in tiny_entries[:10]]  # P1 as written
    checked = 0
    for i, text in enumerate(texts):
        fast, slow = from_cif_fast(text, str(i)), from_text(text, "cif", str(i))
        assert fast is not None, i
        np.testing.assert_allclose(fast.cell, slow.cell, atol=1e-6)
        assert _same_sites(fast, slow), i
        checked += 1
    assert checked == len(texts) >= 60


def test_partial_occupancy_falls_back_to_pymatgen(tmp_path):
    disordered = Structure.from_spacegroup("Fm-3m", [[4.2, 0, 0], [0, 4.2, 0], [0, 0, 4.2]],
                                           [{"Mg": 0.5, "Fe": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(disordered))
    assert from_cif_fast(text, "x") is None
    path = tmp_path / "x.cif"
    path.write_text(text)
    with pytest.raises(Exception) as fast_error:
        read_structure_file(path, fast_cif=True)
    with pytest.raises(Exception) as slow_error:
        read_structure_file(path)
    assert str(fast_error.value) == str(slow_error.value)  # the same one-line refusal as before
