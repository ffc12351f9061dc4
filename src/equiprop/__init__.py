"""equiprop: multi-property prediction for crystals with E(3)-equivariant graph networks."""

__version__ = "0.1.0"
