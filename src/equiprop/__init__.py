"""equiprop: multi-property prediction for crystals with E(3)-equivariant graph networks."""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import equiprop` stays cheap; the model stack loads on first use
    if name in ("Predictor", "load_predictor", "evaluate_split"):
        import equiprop.inference

        return getattr(equiprop.inference, name)
    raise AttributeError(name)
