"""Tensor outputs: log-Euclidean ("spd_log") parametrization, per-irrep normalisation, split tensor losses."""

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.normalization import compute_stats
from equiprop.data.record import from_pymatgen
from equiprop.data.sources.base import SourceResult, add_entry
from equiprop.data.symmetry import rotate_tensor
from equiprop.data.tasks import resolve_task, resolve_tasks
from equiprop.data.tensor_ops import project_symmetric
from equiprop.data.tensor_ops import (anisotropic_part, from_mandel, isotropic_part, spd_exp, spd_exp_torch, spd_log,
                                      sym_expm, sym_logm, to_mandel)
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel
from equiprop.train.normalizer import TaskNormalizer

SPD_TASKS = [{"name": "eps_electronic", "parametrization": "spd_log"},
             {"name": "elastic_tensor", "parametrization": "spd_log"}]


def _random_symmetric(rng, n, size):
    a = rng.normal(size=(n, size, size))
    return (a + np.swapaxes(a, 1, 2)) / 2


def test_logm_expm_round_trip():
    rng = np.random.default_rng(0)
    for size in (3, 6):
        log = _random_symmetric(rng, 5, size)
        np.testing.assert_allclose(sym_logm(sym_expm(log)), log, atol=1e-10)
    eps_log = _random_symmetric(rng, 4, 3)
    for t in eps_log:
        eps = spd_exp(t, "ij=ji")
        assert np.linalg.eigvalsh(eps).min() > 1.0
        np.testing.assert_allclose(spd_log(eps, "ij=ji"), t, atol=1e-10)
    c_log = from_mandel(_random_symmetric(rng, 3, 6))  # a rank-4 log tensor with the stiffness symmetries
    for t in c_log:
        c = spd_exp(t, "ijkl=jikl=klij")
        assert np.linalg.eigvalsh(to_mandel(c)).min() > 0
        np.testing.assert_allclose(spd_log(c, "ijkl=jikl=klij"), t, atol=1e-9)
        np.testing.assert_allclose(spd_exp_torch(torch.as_tensor(t)[None], 4)[0].numpy(), c, atol=1e-9)


def test_log_map_commutes_with_rotations_and_inversion():
    rng = np.random.default_rng(1)
    c = spd_exp(from_mandel(_random_symmetric(rng, 1, 6)[0]), "ijkl=jikl=klij")
    eps = spd_exp(_random_symmetric(rng, 1, 3)[0], "ij=ji")
    for sign in (1.0, -1.0):
        q = Rotation.random(random_state=int(sign > 0)).as_matrix() * sign  # float64: orthogonal to 1e-16
        np.testing.assert_allclose(spd_log(rotate_tensor(c, q), "f"), rotate_tensor(spd_log(c, "f"), q), atol=1e-9)
        np.testing.assert_allclose(spd_log(rotate_tensor(eps, q), "f"), rotate_tensor(spd_log(eps, "f"), q),
                                   atol=1e-10)


def test_parts_of_tensors():
    eps = np.diag([2.0, 3.0, 7.0])
    np.testing.assert_allclose(isotropic_part(eps, "ij=ji"), 4.0 * np.eye(3))
    np.testing.assert_allclose(anisotropic_part(eps, "ij=ji"), np.diag([-2.0, -1.0, 3.0]))
    k, g = 100.0, 40.0  # an isotropic stiffness is its own isotropic part
    delta = np.eye(3)
    c = (k * np.einsum("ij,kl->ijkl", delta, delta)
         + g * (np.einsum("ik,jl->ijkl", delta, delta) + np.einsum("il,jk->ijkl", delta, delta)
                - 2 / 3 * np.einsum("ij,kl->ijkl", delta, delta)))
    np.testing.assert_allclose(anisotropic_part(c, "ijkl=jikl=klij"), 0.0, atol=1e-9)
    piezo = np.random.default_rng(0).normal(size=(3, 3, 3))
    piezo = (piezo + piezo.transpose(0, 2, 1)) / 2
    np.testing.assert_allclose(isotropic_part(piezo, "ijk=ikj"), 0.0, atol=1e-12)


def test_non_positive_definite_labels_are_counted_skips(tiny_entries):
    tasks = resolve_tasks(SPD_TASKS)
    result = SourceResult(name="hand-made", provenance="hand-made labels on a real structure")
    structure = Structure.from_dict(tiny_entries[0]["structure"])
    good, bad = np.diag([4.0, 5.0, 6.0]), np.diag([4.0, 0.9, 6.0])  # eps_inf < 1 along y: not physical
    for i, eps in enumerate([good, bad, good]):
        add_entry(result, f"e{i}", lambda: from_pymatgen(structure, "x"), {"eps_electronic": eps.tolist()}, tasks)
    assert len(result.records) == 2
    assert result.label_skips.counts == {"eps_electronic: tensor not positive definite": 1}
    assert "e1" in result.label_skips.examples["eps_electronic: tensor not positive definite"][0]
    with pytest.raises(DataError, match="smallest eigenvalue"):
        tasks["elastic_tensor"].parse(-np.eye(6), "entry 7")
    with pytest.raises(ConfigError, match="spd_log"):
        resolve_task({"name": "piezo_tensor", "parametrization": "spd_log"})
    with pytest.raises(ConfigError, match="parametrization"):
        resolve_task({"name": "eps_total", "parametrization": "log"})


def test_normaliser_round_trip_and_model_space():
    tasks = resolve_tasks(["eps_total", *SPD_TASKS, "piezo_tensor"])
    rng = np.random.default_rng(2)
    normaliser = TaskNormalizer(tasks).double()
    stats = {}
    for name, task in tasks.items():
        physical = [spd_exp(t, task.formula) if task.parametrization == "spd_log" else t for t in
                    (rng.normal(size=(20, *task.model_shape)) if task.rank != 4 else
                     from_mandel(_random_symmetric(rng, 20, 6)))]
        physical = [project_symmetric(np.asarray(t), task.formula) for t in physical]
        model_space = torch.as_tensor(np.stack([task.to_model(t) for t in physical]))
        stats[name] = compute_stats(model_space, task)
        normaliser.set_stats({name: stats[name]})
        normalised = normaliser.normalise(name, model_space)
        assert normalised.shape == (20, task.cartesian_tensor.dim)
        back = normaliser.to_physical(name, normalised)
        np.testing.assert_allclose(back.numpy(), np.stack(physical), atol=1e-8)
        np.testing.assert_allclose(task.from_model(model_space.numpy()), np.stack(physical), atol=1e-8)


def test_outputs_positive_definite_for_random_weights_and_structures(tiny_entries, float64):
    records = [from_pymatgen(Structure.from_dict(e["structure"]), str(i)) for i, e in enumerate(tiny_entries[:12])]
    batch = Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])
    for seed in range(3):
        torch.manual_seed(seed)
        encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 6, 4], num_layers=2)
        encoder.set_avg_num_neighbors(20.0)
        model = MultiTaskModel(encoder, SPD_TASKS).double().eval()
        for p in model.parameters():
            p.data += 0.3 * torch.randn_like(p)  # perturbed random weights: outputs far from the identity
        with torch.no_grad():
            out = model.predict_physical(batch)
        eps_eigenvalues = torch.linalg.eigvalsh(out["eps_electronic"])
        assert float(eps_eigenvalues.min()) >= 1.0 and float(eps_eigenvalues.max()) > 1.5
        mandel = torch.as_tensor(np.stack([to_mandel(c) for c in out["elastic_tensor"].numpy()]))
        assert float(torch.linalg.eigvalsh(mandel).min()) > 0


def test_environment_harmonics_give_cubic_crystals_their_elastic_anisotropy(float64):
    """At a cubic site every l=1,2 feature vanishes, so without the neighbour-shell harmonics the predicted stiffness
    of rock salt is exactly isotropic; with them (l=4) it has the cubic anisotropy every real cubic crystal has."""
    from pymatgen.core import Lattice

    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    batch = Batch.from_data_list([record_to_graph(from_pymatgen(rock_salt.get_primitive_structure(), "NaCl"), {}, 4.5)])
    anisotropy = {}
    for channels in (0, 4):
        torch.manual_seed(0)
        encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 6, 4], num_layers=2)
        encoder.set_avg_num_neighbors(20.0)
        model = MultiTaskModel(encoder, SPD_TASKS, environment_channels=channels).double().eval()
        for p in model.parameters():
            p.data += 0.3 * torch.randn_like(p)
        with torch.no_grad():
            c = model.predict_physical(batch)["elastic_tensor"][0]
        anisotropy[channels] = float(anisotropic_part(c, "ijkl=jikl=klij").abs().max() / c.abs().max())
    assert anisotropy[0] < 1e-9 and anisotropy[4] > 1e-3
