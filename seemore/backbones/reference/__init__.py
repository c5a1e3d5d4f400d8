"""Published reference configurations, as data: `<backbone>.yaml` maps a dataset name to the
backbone's params.yaml section at the settings the published implementations use there."""

from __future__ import annotations

from pathlib import Path

import yaml

from seemore.backbones.base import BackboneConfig, ClipGeometry

REFERENCE_DIR = Path(__file__).parent

# The benchmarks' published geometries (DESIGN.md §3).
REFERENCE_GEOMETRY = {
    "moving_mnist": ClipGeometry(1, 64, 64, 10, 10),
    "kth": ClipGeometry(1, 128, 128, 10, 20),
    "human36m": ClipGeometry(3, 256, 256, 4, 4),
    "taxibj": ClipGeometry(2, 32, 32, 4, 4),
}


def reference_config(backbone: str, dataset: str) -> tuple[BackboneConfig, ClipGeometry]:
    from seemore.backbones import BACKBONES

    backbone_class = BACKBONES.get(backbone)
    path = REFERENCE_DIR / f"{backbone}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference configurations for {backbone!r}")
    table = yaml.safe_load(path.read_text())
    if dataset not in table or dataset not in REFERENCE_GEOMETRY:
        raise KeyError(f"{path}: no reference configuration for dataset {dataset!r}")
    config = backbone_class.config_class.model_validate(table[dataset], strict=False)
    return config, REFERENCE_GEOMETRY[dataset]
