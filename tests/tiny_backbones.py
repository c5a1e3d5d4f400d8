"""Two tiny backbones for method tests, one of each kind, built directly (never registered,
so the real registry stays as the package defines it)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seemore.backbones import Backbone, BackboneConfig, BackboneKind, ClipGeometry, Output


class TinyConfig(BackboneConfig):
    hidden: int = 4
    layers: int = 2


def _levels(module: nn.Module, prefixes: list[str]) -> list[tuple[str, list[str]]]:
    names = [name for name, _ in module.named_parameters()]
    return [(prefix, [n for n in names if n.startswith(f"{prefix}.")]) for prefix in prefixes]


class TinyStepWise(Backbone):
    """Stacked convolutional RNN cells and a 1x1 head; states are the top cell's hidden."""

    kind = BackboneKind.STEP_WISE
    config_class = TinyConfig

    def __init__(self, config: TinyConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry)
        channels, hidden = geometry.channels, config.hidden
        self.cells = nn.ModuleList(
            nn.ModuleDict(
                {
                    "input": nn.Conv2d(channels if i == 0 else hidden, hidden, 3, padding=1),
                    "recurrent": nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
                }
            )
            for i in range(config.layers)
        )
        self.head = nn.Conv2d(hidden, channels, 1)

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        batch, total = clip.shape[:2]
        hidden = [clip.new_zeros(batch, self.config.hidden, *clip.shape[-2:]) for _ in self.cells]
        frames, states = [], []
        prediction = clip[:, 0]
        for t in range(total - 1):
            if t == 0:
                x = clip[:, 0]
            elif sampling_mask is not None:
                weight = sampling_mask[:, t - 1].view(batch, 1, 1, 1)
                x = weight * clip[:, t] + (1 - weight) * prediction
            else:
                x = clip[:, t] if t < self.geometry.input_frames else prediction
            for i, cell in enumerate(self.cells):
                hidden[i] = torch.tanh(cell["input"](x) + cell["recurrent"](hidden[i]))
                x = hidden[i]
            prediction = self.head(x)
            frames.append(prediction)
            states.append(x)
        return Output(torch.stack(frames, 1), torch.stack(states, 1), clip.new_zeros(()))

    def levels(self) -> list[tuple[str, list[str]]]:
        return [
            (f"layer{i}", names)
            for i, (_, names) in enumerate(
                _levels(self, [f"cells.{i}" for i in range(len(self.cells))])
            )
        ] + _levels(self, ["head"])


class TinyClipWise(Backbone):
    """Per-frame conv encoder, a translator mixing the input frames' latents into the output
    frames' latents, per-frame conv decoder (SimVP's shape, in miniature)."""

    kind = BackboneKind.CLIP_WISE
    config_class = TinyConfig

    def __init__(self, config: TinyConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry)
        channels, hidden = geometry.channels, config.hidden
        self.encoder = nn.Conv2d(channels, hidden, 3, padding=1)
        self.translator = nn.ModuleDict(
            {
                "time": nn.Linear(geometry.input_frames, geometry.output_frames),
                "space": nn.Conv2d(hidden, hidden, 3, padding=1),
            }
        )
        self.decoder = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        batch = clip.shape[0]
        observed = clip[:, : self.geometry.input_frames]
        encoded = self.encoder(observed.flatten(0, 1)).unflatten(0, (batch, -1))
        mixed = self.translator["time"](encoded.movedim(1, -1)).movedim(-1, 1)
        flat = mixed.flatten(0, 1)
        states = flat + torch.tanh(self.translator["space"](flat))
        frames = self.decoder(states).unflatten(0, (batch, -1))
        return Output(frames, states.unflatten(0, (batch, -1)), clip.new_zeros(()), encoded)

    def levels(self) -> list[tuple[str, list[str]]]:
        return _levels(self, ["encoder", "translator", "decoder"])


def geometry(input_frames: int = 3, output_frames: int = 3, size: int = 6) -> ClipGeometry:
    return ClipGeometry(
        channels=1, height=size, width=size, input_frames=input_frames, output_frames=output_frames
    )


def moving_square_clips(batch: int, geometry: ClipGeometry, seed: int = 0) -> Tensor:
    """A bright 2x2 square moving one pixel per frame, wrapping around: learnable motion."""
    generator = torch.Generator().manual_seed(seed)
    total = geometry.total_frames
    clips = torch.zeros(batch, total, geometry.channels, geometry.height, geometry.width)
    for b in range(batch):
        row, col = torch.randint(0, geometry.height, (2,), generator=generator).tolist()
        d_row, d_col = torch.randint(-1, 2, (2,), generator=generator).tolist()
        for t in range(total):
            rows = [(row + d_row * t + i) % geometry.height for i in range(2)]
            cols = [(col + d_col * t + j) % geometry.width for j in range(2)]
            for r in rows:
                clips[b, t, :, r, cols] = 1.0
    return clips
