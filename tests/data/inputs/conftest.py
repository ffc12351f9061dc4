import numpy as np
import pytest
from ase import Atoms


@pytest.fixture
def nacl_frames():
    """``nacl_frames(count)``: rock-salt cells with slightly different random lattices, ids nacl-0, nacl-1, ..."""

    def frames(count: int):
        rng = np.random.default_rng(0)
        out = []
        for i in range(count):
            atoms = Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
                          cell=np.eye(3) * 4 + rng.normal(0, .1, (3, 3)), pbc=True)
            atoms.info["id"] = f"nacl-{i}"
            out.append(atoms)
        return out

    return frames
