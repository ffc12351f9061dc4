import pytest
from pymatgen.core import Structure

from equiprop.data.record import from_pymatgen


@pytest.fixture(scope="module")
def records(tiny_entries):
    """Three bundled tiny crystals as records, what the backbones' tests run on."""
    return [from_pymatgen(Structure.from_dict(e["structure"]), f"tiny-{i}") for i, e in enumerate(tiny_entries[:3])]
