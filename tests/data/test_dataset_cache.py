import json

import torch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources.records_json import RecordsJSON


def _module(path, cache, **kwargs):
    return MultiTaskDataModule(sources=[RecordsJSON(str(path))], cache_dir=str(cache), **kwargs)


def _write_tiny(tiny_multitask_path, path, drop=0):
    content = json.loads(tiny_multitask_path.read_text())
    content["entries"] = content["entries"][drop:]
    path.write_text(json.dumps(content))


def test_cache_hit_serves_identical_graphs(tiny_multitask_path, tmp_path):
    data = tmp_path / "tiny.json"
    _write_tiny(tiny_multitask_path, data)
    built, report = _module(data, tmp_path / "c", tasks=["Ef", "eps_total"]).load_graphs()
    cached, cached_report = _module(data, tmp_path / "c", tasks=["Ef", "eps_total"]).load_graphs()
    assert not report["from_cache"] and cached_report["from_cache"]
    assert len(built) == len(cached) == report["num_graphs"] == 52  # 6 tiny entries have neither Ef nor eps_total
    for a, b in zip(built, cached):
        assert a[keys.STRUCTURE_ID] == b[keys.STRUCTURE_ID]
        torch.testing.assert_close(a[keys.EDGE_INDEX], b[keys.EDGE_INDEX])
        torch.testing.assert_close(a[keys.label_key("eps_total")], b[keys.label_key("eps_total")])
    # the cache file holds only tensors, lists and strings: it loads without unpickling any object
    assert torch.load(report["cache_path"], weights_only=True)


def test_any_change_of_input_or_parameter_misses_the_cache(tiny_multitask_path, tmp_path):
    data = tmp_path / "tiny.json"
    _write_tiny(tiny_multitask_path, data)
    cache = tmp_path / "c"
    _, first = _module(data, cache, tasks=["Ef"]).load_graphs()
    variants = {
        "cutoff": _module(data, cache, tasks=["Ef"], cutoff=4.5),
        "max_neighbors": _module(data, cache, tasks=["Ef"], max_neighbors=12),
        "task list": _module(data, cache, tasks=["Ef", "Eg"]),
        "task definition": _module(data, cache, tasks=[{"name": "Ef", "key": "Ef", "units": "eV/atom",
                                                          "kind": "scalar", "pooling": "sum"}]),
    }
    paths = {first["cache_path"]}
    for what, module in variants.items():
        _, report = module.load_graphs()
        assert not report["from_cache"], what
        paths.add(report["cache_path"])
    _write_tiny(tiny_multitask_path, data, drop=1)  # same file name, different content
    graphs, report = _module(data, cache, tasks=["Ef"]).load_graphs()
    assert not report["from_cache"] and len(graphs) == first["num_graphs"] - 1 == 40
    paths.add(report["cache_path"])
    assert len(paths) == 6


def test_a_cache_of_other_labels_is_never_served(tiny_multitask_path, tmp_path):
    """Two task sets over the same structures: each run gets its own labels."""
    data = tmp_path / "tiny.json"
    _write_tiny(tiny_multitask_path, data)
    ef, _ = _module(data, tmp_path / "c", tasks=["Ef"]).load_graphs()
    eg, _ = _module(data, tmp_path / "c", tasks=["Eg"]).load_graphs()
    assert keys.label_key("Ef") in ef[0] and keys.label_key("Ef") not in eg[0]
    assert keys.label_key("Eg") in eg[0]
