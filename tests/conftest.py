"""Shared fixtures: paths to the real data beside the checkout, and tiny structures from it."""

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"real data expected at {SHARED_DATA} (../shared/data beside the checkout)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_entries(shared_data) -> list[dict]:
    """The 58 entries of tiny_multitask.json (pymatgen structure dicts + masked labels)."""
    return json.loads((shared_data / "tiny_multitask.json").read_text())["entries"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test writes graphs to the user's cache."""
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path_factory.getbasetemp() / "graph_cache"))
