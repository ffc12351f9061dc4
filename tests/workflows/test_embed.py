import numpy as np
from e3nn import o3
from lightning.pytorch.callbacks import ModelCheckpoint
from pymatgen.core import Lattice, Structure

from equiprop.cli import main
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel


def test_embeddings_are_invariant_and_carry_labels(tmp_path, tiny_entries, quiet_trainer):
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef", "eps_electronic"], cutoff=4.5,
                               split=RandomSplit(0.2, 0.0), batch_size=8, cache_dir=str(tmp_path / "c"))
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 4], num_layers=2),
                           ["Ef", "eps_electronic"])
    quiet_trainer(enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path / "run", save_last=True)]
                  ).fit(model, datamodule=data)
    checkpoint = str(tmp_path / "run" / "last.ckpt")

    structure = Structure.from_dict(tiny_entries[0]["structure"])
    R = o3.rand_matrix().double().numpy()
    rotated = Structure(Lattice(structure.lattice.matrix @ R.T), structure.species, structure.cart_coords @ R.T,
                        coords_are_cartesian=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    structure.to(filename=str(inputs / "a.vasp"), fmt="poscar")
    rotated.to(filename=str(inputs / "b.vasp"), fmt="poscar")
    assert main(["embed", "--checkpoint", checkpoint, "--input", str(inputs), "--output", str(tmp_path / "e.npz")]) == 0
    out = np.load(tmp_path / "e.npz")
    # one invariant per channel of the last layer: 8 scalars and the norms of the 4 2e channels the dielectric head
    # reads (output_irreps: auto carries no 1o, which no head reads)
    assert str(model.encoder.irreps_out) == "8x0e+4x2e"
    assert out["embeddings"].shape[0] == 2 and out["embeddings"].shape[1] == 8 + 4
    np.testing.assert_allclose(out["embeddings"][0], out["embeddings"][1], rtol=1e-4, atol=1e-5)

    assert main(["embed", "--checkpoint", checkpoint, "--input", "bundled:tiny", "--output", str(tmp_path / "t.npz")]) == 0
    tiny = np.load(tmp_path / "t.npz")
    # every entry of the dataset, labelled or not (58), with the model's labels where it has them (41 of Ef)
    assert len(tiny["ids"]) == 58 and np.isfinite(tiny["label_Ef"]).sum() == 41
    assert main(["embed", "--checkpoint", checkpoint, "--dataset", "tiny", "--output", str(tmp_path / "old.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "old.npz")["embeddings"], tiny["embeddings"])  # old spelling
    assert str(tiny["units_Ef"]) == "eV/atom" and "cubic" in set(tiny["crystal_systems"])
