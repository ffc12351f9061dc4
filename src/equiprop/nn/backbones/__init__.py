"""Pretrained backbones by name (``equiprop.nn.backbones.base`` has the contract): importing this package registers
the built-in ones. Adding one is one file here (a ``Backbone`` subclass with its ``info``) and an import below."""

from equiprop.data.errors import ConfigError
from equiprop.nn.backbones import chgnet, sevennet_0, sevennet_l3i5, sevennet_mf0  # noqa: F401  register
from equiprop.nn.backbones.base import BACKBONES, Backbone, BackboneInfo, file_sha256

__all__ = ["BACKBONES", "Backbone", "BackboneInfo", "backbone_class", "build_backbone", "file_sha256"]


def backbone_class(name: str) -> type[Backbone]:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build_backbone(name: str, pretrained: bool = True) -> Backbone:
    return backbone_class(name)(pretrained=pretrained)
