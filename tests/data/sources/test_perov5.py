import pytest

from equiprop.data.sources import Perov5CSV
from equiprop.data.sources.matbench_subset import MatbenchSubset
from equiprop.data.tasks import resolve_tasks


def test_reads_real_perovskites_with_units(shared_data):
    tasks = resolve_tasks(["e_form_perovskite", "gap_gllbsc_direct"])
    result = Perov5CSV([str(shared_data / "perov5" / "test.csv.gz")], limit=30).load(tasks)
    assert result.entries_read == 30 and len(result.records) == 30
    first = result.records[0]
    assert first.id == "3961" and first.num_atoms == 5 and first.chemical_system == "F-N-O-Os-Ti"
    assert tasks["e_form_perovskite"].units == "eV/cell" and "gap_gllbsc_direct" in first.labels


def test_subset_map_renames_to_matbench_ids(shared_data):
    source = MatbenchSubset("matbench_perovskites", str(shared_data / "matbench" / "subset_maps" /
                                                        "matbench_perovskites.csv"),
                            Perov5CSV([str(shared_data / "perov5" / "test.csv.gz")], limit=200), "e_form_perovskite")
    result = source.load(resolve_tasks(["e_form_perovskite"]))
    assert result.records and all(r.id.startswith("mb-perovskites-") for r in result.records)
    record = next(r for r in result.records if r.id == "mb-perovskites-05723")  # local 3961 in the map
    assert record.labels["e_form_perovskite"] == pytest.approx(1.16)
    assert result.skips.counts["local structure not found (skipped or absent in the local source)"] > 0
