"""Backbone registry. A new backbone is one module here with `@BACKBONES.register("name")`."""

from seemore.backbones.base import (
    Backbone,
    BackboneConfig,
    BackboneKind,
    ClipGeometry,
    Output,
)
from seemore.registry import Registry

BACKBONES: Registry[type[Backbone]] = Registry("backbone", __name__)


def build_backbone(name: str, config: BackboneConfig, geometry: ClipGeometry) -> Backbone:
    return BACKBONES.get(name)(config, geometry)


__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneConfig",
    "BackboneKind",
    "ClipGeometry",
    "Output",
    "build_backbone",
]
