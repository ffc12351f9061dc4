"""Training and inference throughput on a GPU (or the CPU): the numbers to decide what a GPU buys and where it idles.

    python benchmarks/gpu.py [--device cuda|cpu] [--precision 32|bf16-mixed|16-mixed] [--batches N]
                             [--batch-size 32] [--num-workers 0] [--seed 0] [--quick] [--foundation]

Models, built as ``equiprop fit`` builds them (``build_run``: their tasks, heads, loss and optimiser) on the bundled
default dataset: ``recipes/baseline_invariant.yaml`` (InvariantEncoder) and ``recipes/quickstart.yaml``
(EquivariantEncoder, max_ell 2, multiplicities [32, 16, 8], 2 layers); ``--foundation`` adds
``recipes/foundation_multitask.yaml`` (SevenNet-0, frozen) with its feature cache off, so every step runs the
potential (the cost of featurising structures; a cached epoch only trains the heads).

Training: Lightning's Trainer as it is (``devices=1``, ``precision``, the recipe's gradient clipping), one warm-up
epoch then one timed epoch of ``--batches`` training batches (default: all), no validation, logger or checkpoints;
steps/s and structures/s of the timed epoch (CUDA synchronised at both ends). Inference: the trained model in eval
mode under the trainer's precision context on ``--batches`` test batches (default: all), moved to the device batch by
batch as ``Predictor`` does, after one untimed batch: structures/s. ``--quick``: 3 batches, a smoke run (about a
minute on two CPU cores). A model that fails (e.g. a precision an op does not support) is a row saying why.
Prints a markdown table with the command, commit, seed, device and versions.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"invariant": "recipes/baseline_invariant.yaml", "equivariant": "recipes/quickstart.yaml"}
FOUNDATION = {"foundation": "recipes/foundation_multitask.yaml"}
QUICK_BATCHES = 3


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reads the work done and not only the work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochClock(L.Callback):
    """Seconds, steps and structures of each training epoch."""

    def __init__(self):
        self.epochs: list[tuple[float, int, int]] = []

    def on_train_epoch_start(self, trainer, module):
        synchronize(module.device)
        self.start, self.steps, self.structures = time.perf_counter(), 0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps, self.structures = self.steps + 1, self.structures + int(batch.num_graphs)

    def on_train_epoch_end(self, trainer, module):
        synchronize(module.device)
        self.epochs.append((time.perf_counter() - self.start, self.steps, self.structures))


def build(recipe: str, name: str, args):
    from equiprop.train.run import build_run, load_recipe

    overrides = [f"--run_name=gpu_benchmark_{name}", f"--seed_everything={args.seed}", "--trainer.logger=false",
                 f"--data.batch_size={args.batch_size}", f"--data.num_workers={args.num_workers}"]
    if name == "foundation":
        overrides.append("--model.encoder.init_args.cache_features=false")
    _, model, datamodule = build_run(str(ROOT / recipe), overrides)
    clip = load_recipe(str(ROOT / recipe)).get("trainer", {}).get("gradient_clip_val")
    return model, datamodule, clip


def train(model, datamodule, clip, device: torch.device, args) -> tuple[float, float, object]:
    """(steps/s, structures/s) of the timed epoch, and the trainer (its precision context serves inference)."""
    clock = EpochClock()
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=args.precision,
                        max_epochs=2, limit_train_batches=args.batches or 1.0, limit_val_batches=0,
                        num_sanity_val_steps=0, gradient_clip_val=clip, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
    L.seed_everything(args.seed, verbose=False)
    trainer.fit(model, datamodule=datamodule)
    seconds, steps, structures = clock.epochs[-1]  # the first epoch warms up (allocator, kernels, data)
    return steps / seconds, structures / seconds, trainer


@torch.inference_mode()
def infer(model, datamodule, trainer, device: torch.device, batches: int | None) -> float:
    """Structures per second of ``predict_physical`` on test batches (after one untimed batch)."""
    datamodule.setup("test")
    loader = list(datamodule.test_dataloader())
    loader = loader[: (batches or len(loader)) + 1]
    model = model.to(device).eval()
    structures, start = 0, None
    for i, batch in enumerate(loader):
        if i == 1:
            synchronize(device)
            start = time.perf_counter()
        with trainer.precision_plugin.forward_context():
            model.predict_physical(batch.to(device))
        structures += int(batch.num_graphs) if i else 0
    synchronize(device)
    return structures / (time.perf_counter() - start) if start is not None else float("nan")


def measure(name: str, recipe: str, device: torch.device, args) -> dict:
    row = {"model": name, "recipe": recipe}
    try:
        L.seed_everything(args.seed, verbose=False)
        model, datamodule, clip = build(recipe, name, args)
        row["encoder"] = type(model.encoder).__name__
        row["parameters"] = sum(p.numel() for p in model.parameters())
        row["steps/s"], row["structures/s"], trainer = train(model, datamodule, clip, device, args)
        row["inference structures/s"] = infer(model, datamodule, trainer, device, args.batches)
    except Exception as err:  # noqa: BLE001 - one model's failure (a precision, a missing extra) is a row
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}" if str(err) else repr(err)
    return row


def git_commit() -> str:
    run = lambda *cmd: subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return run("rev-parse", "HEAD") + (" (dirty)" if run("status", "--porcelain", "--untracked-files=no") else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def table(rows: list[dict], device: torch.device, args) -> str:
    lines = [f"command: `{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`",
             f"commit: {git_commit()}; seed: {args.seed}; device: {device_name(device)}; torch {torch.__version__}, "
             f"lightning {L.__version__}; precision {args.precision}; batch size {args.batch_size}; "
             f"batches: {args.batches or 'all'} (training: one warm-up epoch, then one timed)", "",
             "| model | encoder | parameters | train steps/s | train structures/s | inference structures/s |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row.get('encoder', '')} | | failed: {row['error']} | | |")
        else:
            lines.append(f"| {row['model']} | {row['encoder']} | {row['parameters']:,} | {row['steps/s']:.2f} | "
                         f"{row['structures/s']:.1f} | {row['inference structures/s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--batches", type=int, help="training and inference batches per timing (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (the recipes use 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BATCHES} batches: a smoke run")
    parser.add_argument("--foundation", action="store_true", help="add SevenNet-0 (needs equiprop[foundation])")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine (use --device cpu)")
    if args.quick:
        args.batches = args.batches or QUICK_BATCHES
    device = torch.device(args.device)
    rows = [measure(name, recipe, device, args) for name, recipe in
            {**MODELS, **(FOUNDATION if args.foundation else {})}.items()]
    print(table(rows, device, args))


if __name__ == "__main__":
    main()
