"""The predictor a screen stage uses: ``equiprop.uncertainty.load_predictor`` (an ensemble of checkpoints), and the
shape of each of its outputs (found on a probe crystal, before any input is read)."""

from __future__ import annotations

from torch_geometric.data import Batch

from equiprop.predict import probe_crystal


def load_stage_predictor(paths: list[str], batch_size: int, allow_unseen_elements: bool, mc_samples: int | None,
                         stage: str):
    """Checkpoints (an ensemble) or one ensemble manifest .json; its notices printed once, naming the stage."""
    import sys

    from equiprop.uncertainty import load_predictor

    predictor = load_predictor(list(paths), mc_samples=mc_samples, batch_size=batch_size,
                               allow_unseen_elements=allow_unseen_elements, warn=False)
    for notice in predictor.notices:
        print(f"equiprop screen: warning: {stage}: {notice}", file=sys.stderr)
    return predictor


def output_shapes(predictor) -> dict[str, tuple]:
    """{output: shape of one structure's value} (() for scalars, (3, 3), (6, 6) Voigt, (3, 6) ...): the outputs a
    selection can use. Per-atom outputs are written to the table (a list per structure) but not selectable."""
    probe = predictor.graph(probe_crystal(predictor.species_seen, predictor.cutoff))
    prediction = predictor.predict_batch(Batch.from_data_list([probe]))
    per_atom = {name for name, task in predictor.tasks.items() if task.level == "atom"}
    return {name: tuple(mean.shape[1:]) for name, (mean, _) in prediction.items() if name not in per_atom}
