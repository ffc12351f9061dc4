"""Chirality on a real enantiomorphic pair: alpha-quartz in P3_121 (152) and its mirror image in P3_221 (154).

An invariant encoder sees the same distances in both, so every output it gives is the same; an O(3)-equivariant one
whose features carry odd scalars (0o) gives a pseudoscalar (``kind: pseudoscalar``, ``PseudoscalarReadoutBlock``)
of opposite signs, and learns the handedness from the two crystals where the invariant model cannot.
"""

import warnings

import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import record_to_graph
from equiprop.data.normalization import compute_stats
from equiprop.data.record import from_pymatgen
from equiprop.data.tasks import resolve_task
from equiprop.nn import EquivariantEncoder, InvariantEncoder
from equiprop.testing import assert_model_symmetries
from equiprop.train.module import MultiTaskModel

pytestmark = pytest.mark.usefixtures("float64")  # equal and opposite to rounding: build and run in float64

CUTOFF = 4.0  # Å: Si-O 1.61, Si-Si 3.06, O-O 2.6 Å: the helices' second shell
HIDDEN = "16x0e+4x0o+8x1o+4x1e"  # 0o from 1e x 1o: a triple product of bond vectors, three layers deep
HANDEDNESS = {"name": "handedness", "key": "handedness", "units": "dimensionless", "kind": "pseudoscalar"}


@pytest.fixture(scope="module")
def quartz() -> tuple[Structure, Structure]:
    """alpha-quartz (a = 4.913, c = 5.405 Å) built from its space group P3_121, and its mirror image (every position
    inverted). Si on 3a, O on 6c: the usual coordinates (Si x = 0.4697; O 0.4135, 0.2669, 0.1191) inverted and put in
    the International Tables origin of P3_121. Which of the two is called right-handed differs between sources."""
    lattice = Lattice.hexagonal(4.913, 5.405)
    p3121 = Structure.from_spacegroup("P3_121", lattice, ["Si", "O"], [[0.5303, 0.0, 5 / 6],
                                                                       [0.5865, 0.7331, 0.7142]])
    return p3121, Structure(lattice, p3121.species, -p3121.frac_coords)


def _graphs(structures, tasks=None, labels=None):
    tasks, labels = tasks or {}, labels or [{}] * len(structures)
    records = [from_pymatgen(s, f"quartz-{i}", labels=label) for i, (s, label) in enumerate(zip(structures, labels))]
    return Batch.from_data_list([record_to_graph(r, tasks, CUTOFF) for r in records])


def _model(encoder, tasks, **kwargs):
    encoder.set_avg_num_neighbors(10.0)
    model = MultiTaskModel(encoder, tasks, **kwargs).double().eval()
    for p in model.parameters():  # non-trivial outputs everywhere
        p.data += 0.05 * torch.randn_like(p)
    return model


def _equivariant(hidden=HIDDEN, **kwargs):
    torch.manual_seed(0)
    return EquivariantEncoder(cutoff=CUTOFF, max_ell=1, hidden_irreps=hidden, num_layers=3, **kwargs)


def _predict(model, batch):
    with torch.no_grad():
        return model.predict_physical(batch)


def test_the_pair_is_real_quartz_and_a_real_enantiomorphic_pair(quartz):
    p3121, mirror = quartz
    assert [SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number() for s in quartz] == [152, 154]
    assert p3121.composition.reduced_formula == "SiO2" and len(p3121) == 9
    assert p3121.density == pytest.approx(2.65, abs=0.01)  # g/cm^3
    for site in p3121:  # corner-sharing SiO4 tetrahedra, Si-O 1.604 and 1.613 Å
        if site.specie.symbol == "Si":
            bonds = sorted(n.nn_distance for n in p3121.get_neighbors(site, 2.0))
            assert len(bonds) == 4 and bonds == pytest.approx([1.604, 1.604, 1.613, 1.613], abs=2e-3)


def test_the_invariant_encoder_gives_identical_outputs_on_the_two_hands(quartz):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="cannot be produced"):  # its tensor heads: the isotropic part only
        model = _model(InvariantEncoder(cutoff=CUTOFF, num_features=16, num_layers=2),
                       ["Ef", "Eg", "eps_electronic", "piezo_tensor"])
    out = _predict(model, _graphs(quartz))
    for name, value in out.items():
        assert torch.equal(value[0], value[1]) or float((value[0] - value[1]).abs().max()) <= 1e-12, name
    assert float(out["Ef"].abs().max()) > 0


@pytest.mark.parametrize("hidden,last_layer", [(HIDDEN, "16x0e+4x0o"), ("16x0e+8x1o+4x1e", "16x0e+8x1o+4x1e")],
                         ids=["odd-scalars", "quadratic-1o-x-1e"])
def test_the_o3_encoder_gives_opposite_pseudoscalars_and_equal_scalars(quartz, hidden, last_layer):
    model = _model(_equivariant(hidden), [HANDEDNESS, "Ef"])
    assert str(model.encoder.irreps_out) == last_layer  # what the readouts read (heads.irreps_read)
    out = _predict(model, _graphs(quartz))
    p = out["handedness"]
    # random weights see quartz's weak local chirality (nearly regular SiO4 tetrahedra: the 1o and 1e features are
    # small) through a triple product; a centrosymmetric crystal, its own mirror image, gives exactly 0
    assert abs(float(p[0])) > 1e-9, p
    assert float(p[0] + p[1]) == pytest.approx(0.0, abs=1e-9 * abs(float(p[0])))
    assert float(out["Ef"][0] - out["Ef"][1]) == pytest.approx(0.0, abs=1e-12 * abs(float(out["Ef"][0])))
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert abs(float(_predict(model, _graphs([rocksalt]))["handedness"][0])) <= 1e-9 * abs(float(p[0]))


def test_an_encoder_without_odd_features_cannot_take_a_pseudoscalar_task(quartz):
    with pytest.raises(ConfigError, match="pseudoscalar \\(0o\\) needs odd scalars.*hidden_irreps with 0o"):
        MultiTaskModel(_equivariant("32x0e+8x1o+8x2e"), [HANDEDNESS])  # natural parity only: 0e, 1o, 2e
    with pytest.raises(ConfigError, match="which are 16x0e"):
        MultiTaskModel(InvariantEncoder(cutoff=CUTOFF, num_features=16), [HANDEDNESS])
    # SO(3) only (parity: false): all features even by default, refused the same way
    with pytest.raises(ConfigError, match="needs odd scalars"):
        MultiTaskModel(EquivariantEncoder(cutoff=CUTOFF, max_ell=1, multiplicities=[8, 4], parity=False),
                       [HANDEDNESS])
    # given 0o channels anyway, an SO(3)-only encoder would never fill them (its harmonics are even, so is every
    # product): refused where the encoder is built
    with pytest.raises(ConfigError, match="odd irreps .* need parity: true"):
        _equivariant(parity=False)


def test_a_model_with_pseudoscalar_tasks_passes_the_symmetry_battery(quartz, structures):
    """Flips under inversion only, per structure (mean and sum pooled) and per atom; the 0o part of a general
    rank-3 tensor (``ijk``) rotates with it (it came from invariants before: TensorReadoutBlock's ``ir == 0e``)."""
    tasks = [HANDEDNESS, {**HANDEDNESS, "name": "rotatory_power", "key": "rho", "units": "deg/mm", "pooling": "sum"},
             {**HANDEDNESS, "name": "site_chirality", "key": "site", "level": "atom"},
             {"name": "t3", "key": "t3", "units": "x", "kind": "tensor", "formula": "ijk"}, "Ef"]
    with pytest.warns(UserWarning, match="\\['3o'\\] cannot be produced"):  # max_ell 1: ijk's 3o is left at zero
        model = _model(_equivariant(), tasks)
    records = [from_pymatgen(s, str(i)) for i, s in enumerate([*quartz, *structures[:2]])]
    assert_model_symmetries(model, records, cutoff=CUTOFF)


def _fit(encoder, task: dict, quartz, steps: int) -> tuple[list[float], torch.Tensor]:
    """A few Adam steps of a MultiTaskModel on the two hands labelled +1 (P3_121) and -1 (P3_221): the training
    losses, and the predictions (eval mode) after them."""
    spec = resolve_task(task)
    labels = [{spec.name: spec.parse(value, f"quartz-{i}")} for i, value in enumerate(("1", "-1"))]
    batch = _graphs(quartz, {spec.name: spec}, labels)
    model = _model(encoder, [spec], weighting="fixed").train()
    model.normalizer.set_stats({spec.name: compute_stats(batch[keys.label_key(spec.name)], spec)})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        for _ in range(steps):
            optimizer.zero_grad()
            loss = model.training_step(batch, 0)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    return losses, _predict(model.eval(), batch)[spec.name]


def test_a_few_adam_steps_learn_the_handedness_the_invariant_model_cannot(quartz):
    losses, predicted = _fit(_equivariant(), HANDEDNESS, quartz, steps=25)
    assert losses[-1] <= 0.05 * losses[0], losses
    assert float(predicted[0]) > 0 > float(predicted[1]), predicted  # the sign of each label
    torch.manual_seed(0)
    losses, predicted = _fit(InvariantEncoder(cutoff=CUTOFF, num_features=16, num_layers=2),
                             {**HANDEDNESS, "kind": "scalar"}, quartz, steps=25)
    assert float(predicted[0] - predicted[1]) == pytest.approx(0.0, abs=1e-12)  # one prediction for both hands
    assert min(losses) >= 1.0 - 1e-12  # one value c for both: MSE against +1 and -1 is 1 + c^2
