"""Validated field types that several backbone configs share, so each rule and its error
message live in one place."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo

from seemore.schema import PositiveInt


def _odd(size: int, info: ValidationInfo) -> int:
    if size % 2 == 0:
        raise ValueError(
            f"{info.field_name} = {size} is even; expected an odd kernel size (symmetric 'same' "
            "padding keeps the frame size)"
        )
    return size


def _same_widths(widths: list[int], info: ValidationInfo) -> list[int]:
    if len(set(widths)) > 1:
        raise ValueError(
            f"{info.field_name} = {widths}: states pass from each layer to the next, so all "
            "layers need the same width"
        )
    return widths


# A square convolution kernel that keeps the frame size.
OddKernel = Annotated[PositiveInt, AfterValidator(_odd)]

# Hidden channels per recurrent layer, bottom to top, where a state (a spatiotemporal memory,
# MAU's S and T) flows through every layer.
SameWidths = Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_same_widths)]
