"""``equiprop screen --shard I/N`` (``equiprop.workflows.screen``): shards split the chunks into contiguous blocks in
input order, wait for each other's Phase 1 before Phase 2 (the selection is global), write no table, and the merge
(the command without ``--shard``) computes nothing they finished and writes the unsharded run's table byte for byte;
shards started at the same moment on one empty work folder agree on it, as separate processes."""

import argparse
import subprocess
import sys

import pytest

from equiprop.screening.store import WorkDir
from equiprop.workflows.options import shard_spec
from equiprop.workflows.screen import chunk_ranges, parse_arguments, screen, shard_chunks

WINDOWS_TOP_K = {"windows": [{"property": "Eg", "min": 0.1}], "top_k": {"objective": "Ef", "k": 9, "direction": "min"},
                 "straddle_sigmas": 1.0}


def argv(tmp_path, cif_folder, checkpoints, extra=()):
    return ["--input", str(cif_folder), "--phase1", *map(str, checkpoints), "--output", str(tmp_path / "out.csv"),
            "--workers", "0", "--chunk-size", "8", "--batch-size", "4", *map(str, extra)]


def test_shards_are_contiguous_disjoint_blocks_covering_every_chunk():
    chunks = chunk_ranges(58, 8)  # 8 chunks
    for count in (1, 2, 3, 8, 11):
        blocks = [[k for k, _ in shard_chunks(chunks, (i, count))] for i in range(count)]
        assert sum(blocks, []) == list(range(8))  # every chunk once, in order
        assert all(b == list(range(b[0], b[-1] + 1)) for b in blocks if b)
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert shard_spec("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="I/N with 0 <= I < N"):
            shard_spec(bad)


def test_shards_then_a_merge_give_the_unsharded_table_byte_for_byte(tmp_path, cif_folder, checkpoints,
                                                                    selection_recipe, monkeypatch):
    extra = ["-c", selection_recipe(WINDOWS_TOP_K), "--phase2", checkpoints[0]]
    whole = tmp_path / "whole"
    whole.mkdir()
    screen(parse_arguments(argv(whole, cif_folder, checkpoints, extra)))
    sharded = tmp_path / "sharded"
    sharded.mkdir()

    def shard(i: int) -> dict:
        return screen(parse_arguments(argv(sharded, cif_folder, checkpoints, [*extra, "--shard", f"{i}/3"])))

    first = shard(0)
    assert first["phase1_chunks_waiting"] == 5 and first["phase2"] is None  # 8 chunks: 3 + 3 + 2
    assert not (sharded / "out.csv").exists()
    assert shard(1)["phase1_chunks_waiting"] == 2
    last = shard(2)  # every Phase 1 done: this shard goes on to its share of Phase 2
    assert last["phase1_chunks_waiting"] == 0 and last["phase2"] is not None
    computed2 = last["phase2"]["structures_computed"] + sum(shard(i)["phase2"]["structures_computed"] for i in (0, 1))
    assert not (sharded / "out.csv").exists()

    written = []
    write_chunk = WorkDir.write_chunk
    monkeypatch.setattr(WorkDir, "write_chunk", lambda self, *a: (written.append(a[:2]), write_chunk(self, *a)))
    merged = screen(parse_arguments(argv(sharded, cif_folder, checkpoints, extra)))
    assert written == [] and merged["phase1"]["structures_computed"] == 0  # the merge computed nothing
    assert computed2 == merged["phase2"]["read"] > 0
    assert (sharded / "out.csv").read_bytes() == (whole / "out.csv").read_bytes()


@pytest.mark.integration
def test_two_shard_processes_started_together_share_one_work_folder(tmp_path, cif_folder, checkpoints):
    whole = tmp_path / "whole"
    whole.mkdir()
    screen(parse_arguments(argv(whole, cif_folder, checkpoints[:1])))
    command = [sys.executable, "-m", "equiprop.cli", "screen", *argv(tmp_path, cif_folder, checkpoints[:1])]
    processes = [subprocess.Popen([*command, "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert all("merge: run the same command without --shard" in out or "waits for" in out for out, _ in outputs)
    merged = screen(parse_arguments(argv(tmp_path, cif_folder, checkpoints[:1])))
    assert merged["phase1"]["structures_computed"] == 0
    assert (tmp_path / "out.csv").read_bytes() == (whole / "out.csv").read_bytes()
