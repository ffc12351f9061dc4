"""The inverted pass of FoundationEncoder (``equiprop.nn.foundation_passes``) is skipped for centrosymmetric crystals: f(Ix) = f(x)[p] with p the
inversion permutation. Checked against the potential actually run on the inverted crystal, for centrosymmetric,
non-centrosymmetric and mixed batches; the permutation against spglib-free geometry."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.graph import edge_vectors, record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.data.symmetry import inversion_partners, inversion_permutation


def _rocksalt():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _wurtzite():  # P6_3mc: polar, no inversion centre
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


def _rutile():  # inversion centre off the origin's atom ordering: a non-trivial permutation
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


def _batch(structures, cutoff=5.0):
    return Batch.from_data_list([record_to_graph(from_pymatgen(s, f"s{i}"), {}, cutoff)
                                 for i, s in enumerate(structures)])


def test_permutation_maps_each_atom_onto_its_inversion_image():
    rutile = _rutile().copy()
    rutile.translate_sites(range(len(rutile)), [0.11, 0.07, 0.3])  # centre no longer at the origin
    frac = rutile.frac_coords
    p = inversion_permutation(rutile.lattice.matrix, frac, np.array(rutile.atomic_numbers))
    assert p is not None and sorted(p) == list(range(len(rutile)))
    centre = (frac[0] + frac[p[0]]) / 2  # every pair is symmetric about one point (mod half lattice vectors)
    for i, j in enumerate(p):
        offset = frac[i] + frac[j] - 2 * centre
        assert np.allclose(offset - np.round(offset), 0, atol=1e-6)
        assert rutile[i].specie == rutile[j].specie
    assert inversion_permutation(_wurtzite().lattice.matrix, _wurtzite().frac_coords,
                                 np.array(_wurtzite().atomic_numbers)) is None


def test_partners_are_global_indices_and_minus_one_without_centre():
    batch = _batch([_wurtzite(), _rocksalt(), _rutile()])
    partners = inversion_partners(batch)
    counts = torch.bincount(batch[keys.BATCH]).tolist()
    assert (partners[:counts[0]] == -1).all()
    rock = partners[counts[0]:counts[0] + counts[1]]
    assert ((rock >= counts[0]) & (rock < counts[0] + counts[1])).all()
    rutile = partners[counts[0] + counts[1]:]
    assert (rutile >= counts[0] + counts[1]).all()
    assert not torch.equal(rutile, torch.arange(counts[0] + counts[1], len(partners)))  # O atoms swap


@pytest.mark.integration
@pytest.mark.parametrize("structures", [["rocksalt", "rutile"], ["wurtzite"], ["wurtzite", "rutile", "rocksalt"]])
def test_shortcut_equals_running_the_potential_on_the_inverted_crystal(structures):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")
    from equiprop.nn import FoundationEncoder

    make = {"rocksalt": _rocksalt, "rutile": _rutile, "wurtzite": _wurtzite}
    batch = _batch([make[s]() for s in structures])
    encoder = FoundationEncoder(cache_features=False)
    with torch.no_grad():
        vectors, species = edge_vectors(batch), encoder.backbones[0].species_index(batch)
        plus = encoder._pass(0, batch, vectors, species, [])
        reference = encoder._pass(0, batch, -vectors, species, [])
        shortcut = encoder._inverted_pass(0, batch, vectors, species, *plus)
    for ours, theirs in zip(shortcut, reference):
        assert torch.allclose(ours, theirs, atol=2e-5 * float(theirs.abs().max()) + 1e-6)
    if "wurtzite" in structures:  # the polar crystal really differs under inversion: the odd part is not zero
        assert float((plus[1] - reference[1]).abs().max()) > 1e-3
