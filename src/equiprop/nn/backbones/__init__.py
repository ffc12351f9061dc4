"""Pretrained backbones by name (``equiprop.nn.backbones.base`` has the contract): importing this package registers
the built-in ones. Adding one is one file here (a ``Backbone`` subclass with its ``info``) and an import below."""

from equiprop.nn.backbones import chgnet, sevennet_0, sevennet_l3i5, sevennet_mf0  # noqa: F401  register
from equiprop.nn.backbones.base import BACKBONES, Backbone, BackboneInfo, backbone_class, build_backbone

__all__ = ["BACKBONES", "Backbone", "BackboneInfo", "backbone_class", "build_backbone"]
