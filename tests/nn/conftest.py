import pytest
from pymatgen.core import Structure


@pytest.fixture(scope="module")
def structures(tiny_entries):
    """Six bundled tiny structures (pymatgen), for the symmetry tests of encoders and models."""
    return [Structure.from_dict(e["structure"]) for e in tiny_entries[:6]]
