"""Dataset registry. A new benchmark is one module here with `@DATASETS.register("name")`."""

from seemore.data.base import Benchmark, DataConfig
from seemore.registry import Registry

DATASETS: Registry[type[Benchmark]] = Registry("dataset", __name__)

__all__ = ["DATASETS", "Benchmark", "DataConfig"]
