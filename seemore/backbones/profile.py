"""Size and cost of a backbone: parameter count, FLOPs of one inference forward, and the
parameters of each level (the groups LMA gives one rate each)."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_backward_flop, flop_registry, shape_wrapper

from seemore.backbones.base import Backbone, BackboneKind, ClipGeometry


def _conv_backward_flops(*args: Any, out_shape: Any) -> int:
    """torch's count of a convolution's backward with the weight gradient's term divided by
    the groups: torch 2.14 counts that term as if the convolution were dense, so a depthwise
    convolution's weight gradient came out `channels` times too large."""
    *leading, groups, output_mask = args
    grad_input = conv_backward_flop(*leading, groups, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*leading, groups, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


# torch's FLOP formulas (convolutions and matrix products; a multiply-add counts 2) by
# operator, with grouped convolutions' backward counted right.
_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    **flop_registry,
    torch.ops.aten.convolution_backward: shape_wrapper(_conv_backward_flops),
}
# Queries of a tensor's layout: not operators to count (torch's counter passes them on too).
_LAYOUT_QUERIES = {
    torch.ops.aten.sym_is_contiguous.default,
    torch.ops.aten.is_contiguous.default,
    torch.ops.aten.is_contiguous.memory_format,
    torch.ops.aten.is_strides_like_format.default,
    torch.ops.aten.is_non_overlapping_and_dense.default,
    torch.ops.aten.size.default,
    torch.ops.aten.sym_size.default,
    torch.ops.aten.stride.default,
    torch.ops.aten.sym_stride.default,
    torch.ops.aten.storage_offset.default,
    torch.ops.aten.sym_storage_offset.default,
    torch.ops.aten.numel.default,
    torch.ops.aten.sym_numel.default,
    torch.ops.aten.dim.default,
    torch.ops.prim.layout.default,
}


class FlopCounter(TorchDispatchMode):
    """Counts FLOPs as torch's FlopCounterMode does (an operator without a formula that has a
    composite decomposition is decomposed and its parts counted; every other operator is
    counted by its formula, or as zero), in total only, and fast on the meta device: there a
    kernel only works out output shapes, from nothing but its inputs' shapes, strides, dtypes
    and other arguments, yet costs tenths of a millisecond in Python, and a recurrent network
    repeats the same calls every step, so each distinct call is worked out once per process
    (`_META_OUTPUTS`). `tests/test_plan.py` checks the totals against FlopCounterMode."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def get_total_flops(self) -> int:
        return self.total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _LAYOUT_QUERIES or not isinstance(func, torch._ops.OpOverload):
            return NotImplemented
        formula = _FLOP_FORMULAS.get(func._overloadpacket)
        if formula is None and _decomposes(func):
            with self:
                return func.decompose(*args, **kwargs)
        out = _run_on_meta(func, args, kwargs)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flop_counter() -> FlopCounter:
    """A FLOP counter (`with flop_counter() as counter: ...; counter.get_total_flops()`)."""
    return FlopCounter()


_DECOMPOSES: dict[Any, bool] = {}


def _decomposes(func: Any) -> bool:
    """Whether `func.decompose` has a composite decomposition to run (what it checks)."""
    if func not in _DECOMPOSES:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
        _DECOMPOSES[func] = key in func.py_kernels or has_kernel
    return _DECOMPOSES[func]


# Output shapes of meta operators by operator and input signature.
_META_OUTPUTS: dict[tuple[Any, ...], Any] = {}
_CACHEABLE: dict[Any, bool] = {}
_LEAF_TYPES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout)


def _run_on_meta(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, its outputs made from `_META_OUTPUTS` where the same call on
    meta tensors was run before."""
    if not _cacheable(func):
        return func(*args, **kwargs)
    try:
        key = (func, _signature(args), _signature(tuple(sorted(kwargs.items()))))
    except TypeError:  # an argument that is no meta tensor or plain value
        return func(*args, **kwargs)
    if key in _META_OUTPUTS:
        return _materialise(_META_OUTPUTS[key])
    out = func(*args, **kwargs)
    with contextlib.suppress(TypeError):  # outputs that are not meta tensors: not kept
        _META_OUTPUTS[key] = _describe(out)
    return out


def _cacheable(func: Any) -> bool:
    """Functional operators only: no views, in-place or out= (their outputs alias inputs),
    nothing whose output shape depends on values."""
    if func not in _CACHEABLE:
        schema = func._schema
        _CACHEABLE[func] = (
            all(a.alias_info is None for a in (*schema.arguments, *schema.returns))
            and torch.Tag.dynamic_output_shape not in func.tags
            and torch.Tag.data_dependent_output not in func.tags
        )
    return _CACHEABLE[func]


def _signature(value: Any) -> Any:
    """A hashable description of an argument; TypeError where there is none."""
    if isinstance(value, Tensor):
        if value.device.type != "meta":
            raise TypeError("not a meta tensor")
        return (Tensor, value.shape, value.stride(), value.storage_offset(), value.dtype)
    if isinstance(value, list | tuple):
        return (type(value), tuple(_signature(item) for item in value))
    if isinstance(value, (_LEAF_TYPES, torch.memory_format)):
        return (type(value), value)
    raise TypeError(f"no signature for {type(value).__name__}")


def _describe(out: Any) -> Any:
    if isinstance(out, Tensor):
        if out.device.type != "meta":
            raise TypeError("not a meta tensor")
        return (out.shape, out.stride(), out.dtype)
    if out is None:
        return None
    if isinstance(out, list | tuple):
        return (type(out), tuple(_describe(item) for item in out))
    raise TypeError(f"no description for {type(out).__name__}")


def _materialise(description: Any) -> Any:
    if description is None:
        return None
    if isinstance(description[0], type):
        kind, items = description
        return kind(_materialise(item) for item in items)
    shape, stride, dtype = description
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (frozen ones included, as published counts do)."""
    return sum(p.numel() for p in module.parameters())


def level_sizes(network: Backbone) -> list[tuple[str, int]]:
    """`(level name, parameter elements)` of each level, shallow to deep."""
    parameters = dict(network.named_parameters())
    return [
        (level, sum(parameters[name].numel() for name in names))
        for level, names in network.levels()
    ]


def zero_clip(geometry: ClipGeometry, batch_size: int, like: Tensor) -> Tensor:
    """A zero clip `[B, input + output frames, C, H, W]` on `like`'s device and dtype."""
    g = geometry
    return torch.zeros(
        batch_size,
        g.total_frames,
        g.channels,
        g.height,
        g.width,
        device=like.device,
        dtype=like.dtype,
    )


# The shortest clip a polynomial is fitted from (a step-wise clip has at least 2 frames), the
# highest degree tried, and the clip length from which fitting is cheaper than counting: the
# fit counts at most 4 clips of 1 to 4 steps (10 steps), a clip of 12 frames has 11.
FIRST_FRAMES = 2
MAX_DEGREE = 2
FIT_FROM_FRAMES = 12


def polynomial_in_frames(count: Callable[[int], int], frames: int) -> int:
    """`count(frames)`, computed from counts at a few short clips where that is exact.

    A step-wise backbone runs the same operations on the same shapes at every step (or, with
    a growing history such as E3D-LSTM's recall over all earlier cell states, one more slice
    per step), so its FLOPs are a polynomial in the clip length: of degree one, or two for a
    growing history. The counts at `FIRST_FRAMES`, `FIRST_FRAMES + 1`, ... fix the polynomial
    and one more count confirms it (its next finite difference is zero); the polynomial then
    gives the count at `frames` exactly, in integers. Where no polynomial of degree at most
    `MAX_DEGREE` is confirmed, `count(frames)` itself is returned. On the meta device a count
    costs per operation, not per element, so a few short clips are several times cheaper than
    one long one.
    """
    if frames < FIT_FROM_FRAMES:
        return count(frames)
    counts = [count(FIRST_FRAMES), count(FIRST_FRAMES + 1)]
    for degree in range(1, MAX_DEGREE + 1):
        counts.append(count(FIRST_FRAMES + degree + 1))
        differences = _forward_differences(counts)
        if differences[-1] == 0:
            # Newton's forward form: sum over j of C(n, j) * (j-th difference at the first).
            n = frames - FIRST_FRAMES
            return sum(math.comb(n, j) * d for j, d in enumerate(differences[:-1]))
    return count(frames)


def _forward_differences(values: list[int]) -> list[int]:
    """`[values[0], Δ values[0], Δ² values[0], ...]` (one entry per value)."""
    differences = []
    row = list(values)
    while row:
        differences.append(row[0])
        row = [b - a for a, b in itertools.pairwise(row)]
    return differences


def forward_flops(backbone: Backbone, frames: int, batch_size: int = 1) -> int:
    """FLOPs of one inference forward on a zero clip of `frames` frames of the backbone's
    geometry, counted directly."""
    clip = zero_clip(backbone.geometry, batch_size, next(backbone.parameters()))[:, :frames]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            backbone(clip, None)
    finally:
        backbone.train(was_training)
    return int(counter.get_total_flops())


def count_flops(backbone: Backbone, batch_size: int = 1) -> int:
    """FLOPs (a multiply-add counts 2) of one inference forward on a zero clip of the
    backbone's geometry (`input_frames + output_frames` frames, batch `batch_size`), as
    torch's FlopCounterMode counts them: convolutions and matrix products, not elementwise ops.
    Step-wise backbones are counted on short clips and extrapolated (`polynomial_in_frames`).
    """
    frames = backbone.geometry.total_frames
    if backbone.kind is not BackboneKind.STEP_WISE:
        return forward_flops(backbone, frames, batch_size)
    return polynomial_in_frames(lambda n: forward_flops(backbone, n, batch_size), frames)


def build_on_meta(
    backbone_class: type[Backbone], config: object, geometry: ClipGeometry
) -> Backbone:
    """The backbone on the meta device: shapes only, so a paper-size model costs neither
    memory nor compute to measure."""
    with torch.device("meta"):
        return backbone_class(config, geometry)  # type: ignore[arg-type]


def profile(
    backbone_class: type[Backbone], config: object, geometry: ClipGeometry
) -> tuple[int, int]:
    """(parameters, FLOPs of one inference forward) of a backbone, measured on meta."""
    network = build_on_meta(backbone_class, config, geometry)
    return count_parameters(network), count_flops(network)
