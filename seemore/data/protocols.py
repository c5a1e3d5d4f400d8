"""Named data protocols (docs/protocols.md): each reproduces how one reference prepares a
benchmark (split membership, windows, frame size and resize, value range). A benchmark keeps
a registry of its protocols; `data.<dataset>.protocol` picks one, and meta.json records it.

Adding a protocol is one class with `@<BENCHMARK>_PROTOCOLS.register("name")` in the
benchmark's module. The `embedded` source is the benchmark's stand-in under every protocol
(labelled with the protocol, and as a stand-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from seemore.data.base import DataConfig
from seemore.registry import Registry


class Protocol:
    """One reference's preparation of a benchmark's real data."""

    # The reference it reproduces, e.g. "OpenSTL openstl/datasets/dataloader_kth.py".
    reference: ClassVar[str]
    # False where numbers are not comparable with any published table (our own splits).
    comparable: ClassVar[bool] = True
    # Real sources this protocol reads ("download", "local"); `embedded` always works.
    sources: ClassVar[tuple[str, ...]] = ("download", "local")

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        """Problems of the section under this protocol (empty when it is usable)."""
        return []

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Write the prepared splits of the real data into `out_dir` and return the meta.json
        entries they add (`val_rule` among them)."""
        raise NotImplementedError


def protocol_registry(dataset: str) -> Registry[type[Protocol]]:
    # Protocols live in the benchmark modules of this package, which the registry imports.
    return Registry(f"{dataset} protocol", "seemore.data")
