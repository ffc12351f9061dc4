"""Rerun the reliability trials of issue 26 as the reporter ran them: real commands on damaged files and bad options.

    python benchmarks/trust_trials.py [--keep DIR]      # ~4 min on 2 cores; prints one row per trial

Each trial must end in a one-line error (exit 2), a counted rebuild (exit 0 and a warning naming the file), or a
refusal that leaves every file as it was; the table says which, with the command's last stderr line. Works in a
temporary folder with copies (the shipped models are only read); needs ``../shared`` for nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
TINY = {"run_name": "tiny", "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "limit_train_batches": 2, "limit_val_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
        "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                              "init_args": {"max_ell": 1, "multiplicities": [8, 4], "num_layers": 1}}},
        "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
                 "tasks": ["Ef", "Eg"], "cutoff": 4.5, "batch_size": 8, "cache_dir": "cache",
                 "split": {"class_path": "equiprop.data.splits.GroupedSplit",
                           "init_args": {"val_fraction": 0.25, "test_fraction": 0.25}}}}


def equiprop(*args, cwd) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "equiprop.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip() and "%|" not in line]
    return done.returncode, lines


def digests(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip(path: Path, count: int = 64, every: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    positions = range(len(data) // 2, len(data) // 2 + count) if every is None else range(64, len(data), every)
    for i in positions:
        data[i] ^= 0xFF if every is None else 0x01
    path.write_bytes(bytes(data))


def sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement)


class Trials:
    def __init__(self, work: Path):
        self.work, self.rows = work, []
        self.shipped = digests(SHIPPED)

    def run(self, name: str, args: list, expect: str, check=None) -> None:
        """``expect``: "error" (exit 2, one error line) or "rebuilt" (exit 0, a warning line naming a rebuild)."""
        code, lines = equiprop(*args, cwd=self.work)
        errors = [line for line in lines if "error:" in line]
        if expect == "error":
            ok = code == 2 and len(errors) == 1 and not any(line.startswith("Traceback") for line in lines)
        else:
            ok = code == 0 and any(w in line for line in lines for w in ("rebuilt", "computed again", "recomputed"))
        ok = ok and digests(SHIPPED) == self.shipped and (check is None or check())
        said = [line for line in lines if "Warning" in line or "warning:" in line]
        last = (errors or said or lines or [""])[-1]
        self.rows.append((name, code, "ok" if ok else "FAILED", last[:150]))
        print(f"{'ok' if ok else 'FAILED':<7} {name:<58} exit {code}  {last[:150]}", flush=True)


def tiny_fit(t: Trials, recipe: Path) -> Path:
    code, lines = equiprop("fit", "-c", recipe, cwd=t.work)
    assert code == 0, lines[-5:]
    return t.work / "runs" / "tiny" / "best.ckpt"


def model_copy(t: Trials, name: str) -> Path:
    target = t.work / name
    shutil.rmtree(target, ignore_errors=True)
    return Path(shutil.copytree(SHIPPED / "equiprop-mp-v1", target))


def shipped_trials(t: Trials) -> None:
    predict = ["predict", "--input", REPO / "examples" / "cifs", "--output", "p.csv", "--model"]
    flip(model_copy(t, "v1_flipped") / "member_s2.ckpt")
    t.run("shipped member: 64 bytes flipped", predict[:-1] + ["--checkpoint", "v1_flipped/model.json"], "error")
    flip(model_copy(t, "v1_bits") / "member_s2.ckpt", every=4000)
    t.run("shipped member: one bit in every 1,000 floats", predict[:-1] + ["--checkpoint", "v1_bits/model.json"],
          "error")
    swapped = model_copy(t, "v1_swapped")
    shutil.copyfile(SHIPPED / "equiprop-mp-v2" / "member_s0.ckpt", swapped / "member_s0.ckpt")
    t.run("shipped member swapped for v2's", predict[:-1] + ["--checkpoint", "v1_swapped/model.json"], "error")
    for value in (-5, float("nan"), "x"):
        folder = model_copy(t, "v1_scale")
        info = json.loads((folder / "model.json").read_text())
        info["std_scale"]["Ef"] = value
        (folder / "model.json").write_text(json.dumps(info))
        t.run(f"manifest std_scale.Ef: {value}", predict[:-1] + ["--checkpoint", "v1_scale/model.json"], "error")
    t.run("fit --run_name=equiprop-mp-v1 --overwrite=true",
          ["fit", "-c", REPO / "recipes" / "quickstart_transfer.yaml", "--run_name=equiprop-mp-v1",
           "--overwrite=true"], "error")
    header = (SHIPPED / "equiprop-mp-v1" / "test_metrics.csv").read_text().splitlines()[0].split(",")
    t.rows.append(("shipped test_metrics.csv headers unique", 0, "ok" if len(header) == len(set(header)) else
                   "FAILED", ",".join(header)))


def run_trials(t: Trials, recipe: Path, best: Path) -> None:
    elsewhere = t.work / "any" / "folder"
    elsewhere.mkdir(parents=True)
    (elsewhere / "keep.ckpt").write_text("the user's")
    t.run("fit --checkpoint.dirpath=/any/folder --overwrite=true", ["fit", "-c", recipe,
          f"--checkpoint.dirpath={elsewhere}", "--overwrite=true", "--run_name=x"], "error",
          lambda: (elsewhere / "keep.ckpt").read_text() == "the user's")
    t.run("fit --run_name=<300 characters>", ["fit", "-c", recipe, "--run_name=" + "a" * 300], "error")
    t.run("fit --trainer.max_epochs=-5", ["fit", "-c", recipe, "--trainer.max_epochs=-5"], "error")
    evil = t.work / "evil.ckpt"
    subprocess.run([sys.executable, "-c", "import os, sys, torch\nclass P:\n def __reduce__(self): return "
                    "(os.system, ('touch PWNED',))\ntorch.save({'state_dict': {}, 'x': P()}, sys.argv[1])",
                    str(evil)], check=True)
    for option in ("--model.init_from", "--ckpt_path"):
        t.run(f"crafted checkpoint through {option}", ["fit", "-c", recipe, f"{option}={evil}"], "error",
              lambda: not (t.work / "PWNED").exists())
    import torch

    checkpoint = torch.load(best, weights_only=True)
    checkpoint["equiprop"]["tasks"]["Ef"]["units"] = "meV/atom"
    torch.save(checkpoint, t.work / "mev.ckpt")
    t.run("ensemble members in eV/atom and meV/atom", ["predict", "--checkpoint", best, "mev.ckpt", "--input",
          REPO / "examples" / "cifs", "--output", "u.csv", "--allow-unseen-elements"], "error")
    for extra in (["--diversity", "nan"], ["--strategy", "ei", "--best", "nan"]):
        t.run(f"suggest {' '.join(extra)}", ["suggest", "--input", "bundled:tiny", "--checkpoint", best, best,
              "--task", "Ef", "--budget", "3", "--output", "s.csv", *extra], "error")
    other = t.work / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "tasks": ["Ef"]}}))
    shutil.copytree(best.parent, t.work / "runs" / "tiny_s0")
    t.run("ensemble reusing a member of another recipe", ["ensemble", "-c", other, "--seeds", "0", "--run_name",
          "tiny"], "error")


def cache_trials(t: Trials, recipe: Path) -> None:
    summary = ["data", "summary", "-c", recipe]
    cache = t.work / "cache"
    pt = next(cache.glob("*.pt"))
    flip(pt, every=100)
    t.run("graph cache .pt: a bit in every 100th byte", summary, "rebuilt")
    report = pt.with_suffix(".json")
    report.write_text("{not json")
    t.run("graph cache report: bad JSON", summary, "rebuilt")
    disk = summary + ["--data.storage=disk"]
    equiprop(*disk, cwd=t.work)
    store = next(cache.glob("*.sqlite"))
    for name, statement in (("UPDATE chemical_system='Zz' WHERE id%7=0",
                             "UPDATE graphs SET chemical_system='Zz' WHERE id%7=0"),
                            ("DELETE id BETWEEN 10 AND 19", "DELETE FROM graphs WHERE id BETWEEN 10 AND 19"),
                            ("num_nodes off by one", "UPDATE graphs SET num_nodes=num_nodes+1 WHERE id=5")):
        sql(store, statement)
        t.run(f"graph store: {name}", disk, "rebuilt")
    Path(f"{store}.json").write_text("{not json")
    t.run("graph store report: bad JSON", disk, "rebuilt")


def feature_cache_trial(t: Trials, recipe: Path) -> None:
    """SevenNet-0 features of the tiny set cached by a frozen-encoder fit; then a dtype and a shape edited."""
    foundation = t.work / "foundation.yaml"
    foundation.write_text(yaml.safe_dump({**TINY, "run_name": "tiny_foundation",
                                          "model": {"encoder": {"class_path": "equiprop.nn.FoundationEncoder",
                                                                "init_args": {}}},
                                          "data": {**TINY["data"], "cutoff": 5.0}}))
    code, lines = equiprop("fit", "-c", foundation, cwd=t.work)
    assert code == 0, lines[-5:]
    cache = next((t.work / "cache" / "features").rglob("*.sqlite"))
    for name, statement in (("dtype '<f4' -> '<f8'", "UPDATE features SET dtype='<f8' WHERE rowid%3=0"),
                            ("shape changed", "UPDATE features SET shape='[1, 7]' WHERE rowid%5=0")):
        sql(cache, statement)
        t.run(f"feature cache: {name}", ["fit", "-c", foundation, "--overwrite=true"], "rebuilt")


def read_only_trial(t: Trials, recipe: Path) -> None:
    folder = t.work / "read_only_cache"
    folder.mkdir()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode:
        t.rows.append(("read-only cache folder", 0, "skipped", "chattr +i unavailable"))
        return
    try:  # root ignores permission bits; an immutable folder refuses even root
        t.run("graph cache in a read-only folder", ["data", "summary", "-c", recipe,
                                                    f"--data.cache_dir={folder}"], "error")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def orphan_trial(t: Trials, best: Path) -> None:
    import psutil

    screen = subprocess.Popen([sys.executable, "-m", "equiprop.cli", "screen", "--input", *["bundled:default"] * 3,
                               "--phase1", str(best), "--output", "o.csv", "--workers", "2",
                               "--allow-unseen-elements"], cwd=t.work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    parent = psutil.Process(screen.pid)
    end = time.monotonic() + 120
    while len(parent.children(recursive=True)) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    children = parent.children(recursive=True)
    time.sleep(1)
    os.kill(screen.pid, signal.SIGKILL)
    screen.wait()
    time.sleep(5)
    alive = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    t.rows.append(("screen killed with kill -9: workers left", 0, "ok" if children and not alive else "FAILED",
                   f"{len(children)} workers, {len(alive)} alive 5 s later"))
    print(t.rows[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="trust_trials_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["EQUIPROP_CACHE"] = str(work / "cache")
    t = Trials(work)
    recipe = work / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    best = tiny_fit(t, recipe)
    shipped_trials(t)
    run_trials(t, recipe, best)
    cache_trials(t, recipe)
    feature_cache_trial(t, recipe)
    read_only_trial(t, recipe)
    orphan_trial(t, best)
    print(f"\n{'trial':<58} {'exit':>4}  result  last line")
    for name, code, result, last in t.rows:
        print(f"{name:<58} {code:>4}  {result:<6}  {last}")
    failed = [row for row in t.rows if row[2] != "ok"]
    print(f"\n{len(t.rows) - len(failed)} of {len(t.rows)} trials ok")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
