"""Shared fixtures. Tests never touch the network; keep torch to one thread so parallel
engineers' and CI runs stay predictable on 2 cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


@pytest.fixture
def embedded_raw() -> dict[str, Any]:
    """The embedded preset as a plain mapping, to mutate in tests."""
    from seemore.recipes import compose_preset

    return compose_preset("embedded")
