"""equiprop: multi-property prediction for crystals with E(3)-equivariant graph networks."""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import equiprop` stays cheap; the model stack loads on first use
    if name == "Predictor":
        from equiprop.predict import Predictor

        return Predictor
    if name in ("UncertainPredictor", "load_predictor"):
        import equiprop.uncertainty

        return getattr(equiprop.uncertainty, name)
    raise AttributeError(name)
