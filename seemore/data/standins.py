"""Procedural offline stand-ins for KTH, Human3.6M and TaxiBJ (DESIGN.md §3).

Each has the real benchmark's channels and horizons and structure a model can learn, is a
pure function of its random generator (so `data_seed` fixes it), and takes seconds to make.
They are NOT the real benchmarks; every meta.json written from them says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# --- shared -------------------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """float32 `[size, size]` in [0, 1]: uniform noise on a `cells` grid, bicubic upsampled."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    field = np.asarray(image, dtype=np.float32)
    low, high = field.min(), field.max()
    return (field - low) / max(float(high - low), 1e-6)


def triangle_wave(start: np.ndarray, velocity: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of points moving from `start` at `velocity` per step and reflecting off `low`
    and `high` (`velocity` is `[..., T]` cumulative-summed along its last axis)."""
    span = high - low
    unfolded = start[..., None] - low + np.cumsum(velocity, axis=-1) - velocity[..., :1]
    phase = np.mod(unfolded, 2 * span)
    return low + span - np.abs(span - phase)


# --- KTH: an articulated stick figure -------------------------------------------------------

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
# Gait of the three locomotion actions at 64x64: frames per stride cycle, pixels per frame,
# leg swing (radians), arm swing, forearm bend, torso lean.
GAITS = {
    "walking": (16.0, 0.6, 0.45, 0.35, 0.3, 0.0),
    "jogging": (12.0, 1.3, 0.6, 0.5, 1.3, 0.1),
    "running": (9.0, 2.1, 0.85, 0.7, 1.5, 0.2),
}
# The four KTH recording scenarios: outdoors, outdoors with scale variation, outdoors with
# different clothes, indoors.
SCENARIOS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Person:
    """The look of one stand-in person, fixed by their number."""

    height: float  # fraction of the frame height
    shade: int  # gray level of body and limbs
    tempo: float  # multiplies the action's frequency


def kth_person(data_seed: int, number: int) -> Person:
    rng = np.random.default_rng([data_seed, 7919, number])
    dark = rng.random() < 0.5
    shade = int(rng.integers(20, 70) if dark else rng.integers(190, 245))
    return Person(height=float(rng.uniform(0.48, 0.62)), shade=shade, tempo=rng.uniform(0.85, 1.2))


def _limb(
    start: np.ndarray, angle: np.ndarray, length: np.ndarray, facing: np.ndarray
) -> np.ndarray:
    """End points `[T, 2]` of limbs of `length` leaving `start` at `angle` from straight down,
    turned toward `facing` (+1 right, -1 left); image coordinates (x right, y down)."""
    return start + (length * np.stack([facing * np.sin(angle), np.cos(angle)])).T


@dataclass(frozen=True)
class Figure:
    """A stick figure over T frames: limb segments `[T, 9, 2, 2]` (start / end, x / y in
    pixels; torso first) and the head `[T, 3]` (centre x, y and radius)."""

    segments: np.ndarray
    head: np.ndarray


# Body proportions as fractions of the figure height.
TORSO, UPPER_ARM, FOREARM, THIGH, SHIN, HEAD = 0.30, 0.17, 0.16, 0.24, 0.24, 0.075


def stick_figure(
    action: str,
    frames: int,
    size: int,
    person: Person,
    scenario: int,
    rng: np.random.Generator,
) -> Figure:
    """One figure doing `action` in a `size` square frame (facing, start position and phase
    drawn from `rng`); scenario 2 zooms slowly in and out, as KTH's scale-variation clips."""
    t = np.arange(frames, dtype=np.float64)
    phase = 2 * np.pi * rng.random() + 2 * np.pi * person.tempo * t
    direction = float(rng.choice([-1.0, 1.0]))
    ones = np.ones(frames)
    lean = np.zeros(frames)
    bob = np.zeros(frames)
    if action in GAITS:
        period, speed, legs, arms, bend, lean_angle = GAITS[action]
        phase = phase / period
        velocity = np.full(frames, direction * speed * person.tempo * size / 64)
        start = np.array(rng.uniform(0.15, 0.85) * size)
        x = triangle_wave(start, velocity, 0.12 * size, 0.88 * size)
        # Facing follows the motion, turning at the frame edges.
        facing = np.sign(np.gradient(x)) if frames > 1 else np.full(frames, direction)
        facing[facing == 0] = direction
        swing = np.sin(phase)
        thighs = [legs * swing, -legs * swing]
        # A knee bends while its leg swings forward.
        shins = [thighs[i] - legs * np.clip(np.cos(phase + i * np.pi), 0, None) for i in (0, 1)]
        uppers = [-arms * swing, arms * swing]
        fores = [uppers[i] + bend for i in (0, 1)]
        lean = lean_angle * ones
        bob = 0.015 * np.abs(swing)
        arm_facing = [facing, facing]
    else:
        phase = phase / 14.0
        x = rng.uniform(0.3, 0.7) * size * ones
        facing = direction * ones
        thighs = [0.12 * ones, -0.12 * ones]
        shins = thighs
        if action == "boxing":
            # From guard (fists at the face) to a straight punch, the arms alternating.
            punch = [np.clip(np.sin(phase + i * np.pi), 0, None) ** 2 for i in (0, 1)]
            uppers = [0.9 + 0.65 * p for p in punch]
            fores = [2.6 - 1.05 * p for p in punch]
            arm_facing = [facing, facing]
        else:
            # Seen from the front: the two arms mirror each other.
            arm_facing = [-ones, ones]
            if action == "handwaving":
                wave = 0.5 * np.sin(phase)
                uppers = [2.3 + wave, 2.3 + wave]
                fores = [2.7 + 1.3 * wave, 2.7 + 1.3 * wave]
            elif action == "handclapping":
                # The hands meet in front of the chest and part again.
                spread = 0.5 * (1 + np.cos(phase))
                uppers = [0.35 + 0.3 * spread, 0.35 + 0.3 * spread]
                fores = [-1.25 + 1.0 * spread, -1.25 + 1.0 * spread]
            else:
                raise ValueError(f"unknown action {action!r}; expected one of {KTH_ACTIONS}")
    zoom = ones
    if scenario == 2:
        zoom = 1 + 0.2 * np.sin(2 * np.pi * (t / rng.uniform(40, 80) + rng.random()))
    height = person.height * size * zoom
    ground = 0.9 * size
    hip = np.stack([x, ground - (THIGH + SHIN + bob) * height * 0.97], axis=-1)
    neck = _limb(hip, np.pi - lean, TORSO * height, facing)
    head_centre = _limb(neck, np.pi - lean, 1.4 * HEAD * height, facing)
    segments = [(hip, neck)]
    for i in (0, 1):
        knee = _limb(hip, thighs[i], THIGH * height, facing)
        segments += [(hip, knee), (knee, _limb(knee, shins[i], SHIN * height, facing))]
    for i in (0, 1):
        elbow = _limb(neck, uppers[i], UPPER_ARM * height, arm_facing[i])
        segments += [
            (neck, elbow),
            (elbow, _limb(elbow, fores[i], FOREARM * height, arm_facing[i])),
        ]
    stacked = np.stack([np.stack(pair, axis=1) for pair in segments], axis=1)
    head = np.concatenate([head_centre, (HEAD * height)[:, None]], axis=-1)
    return Figure(segments=stacked, head=head)


def kth_background(rng: np.random.Generator, size: int, scenario: int) -> np.ndarray:
    """uint8 `[size, size]`: textured ground and backdrop outdoors, a plainer lit wall
    indoors (scenario 4)."""
    coarse, fine = smooth_field(rng, size, 4), smooth_field(rng, size, 16)
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    if scenario == 4:
        level = 0.35 + 0.25 * rows + 0.1 * coarse + 0.03 * fine
    else:
        ground = rows > rng.uniform(0.55, 0.7)
        level = 0.3 + 0.3 * coarse + 0.15 * fine + np.where(ground, 0.1, 0.0)
    return np.clip(level * 255, 0, 255).astype(np.uint8)


def render_figure(
    background: np.ndarray, figure: Figure, shade: int, torso_shade: int, scale: int
) -> np.ndarray:
    """uint8 clip `[T, 1, S, S]`: the figure drawn on `background` (`[S, S]`) at `scale`
    times the resolution and box-filtered down, which anti-aliases the limbs."""
    size = background.shape[0]
    canvas = Image.fromarray(background).resize((size * scale,) * 2, Image.Resampling.BILINEAR)
    frames = []
    for segments, (cx, cy, radius) in zip(
        figure.segments * scale, figure.head * scale, strict=True
    ):
        frame = canvas.copy()
        draw = ImageDraw.Draw(frame)
        width = max(2, round(0.55 * radius))
        for index, ((x0, y0), (x1, y1)) in enumerate(segments):
            fill, thickness = (torso_shade, 2 * width) if index == 0 else (shade, width)
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=thickness)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=shade)
        frames.append(np.asarray(frame.resize((size, size), Image.Resampling.BOX)))
    return np.stack(frames)[:, None]


def kth_clips(
    data_seed: int,
    stream: int,
    persons: list[int],
    actions: list[str],
    count: int,
    frames: int,
    size: int,
) -> tuple[np.ndarray, list[dict[str, int | str]]]:
    """`count` uint8 clips `[N, T, 1, S, S]` of one stick figure each, doing one of `actions`
    in one of KTH's four scenarios, played by one of `persons` (taken in turn); with the
    person, action and scenario of each clip. `stream` separates the splits' random streams."""
    rng = np.random.default_rng([data_seed, stream])
    looks = {number: kth_person(data_seed, number) for number in persons}
    clips = np.empty((count, frames, 1, size, size), dtype=np.uint8)
    labels: list[dict[str, int | str]] = []
    for index in range(count):
        number = persons[index % len(persons)]
        action = actions[int(rng.integers(len(actions)))]
        scenario = int(rng.choice(SCENARIOS))
        person = looks[number]
        figure = stick_figure(action, frames, size, person, scenario, rng)
        # Scenario 3, different clothes: a coat of another shade over the torso.
        torso_shade = 255 - person.shade if scenario == 3 else person.shade
        background = kth_background(rng, size, scenario)
        clips[index] = render_figure(background, figure, person.shade, torso_shade, scale=2)
        labels.append({"person": number, "action": action, "scenario": scenario})
    return clips, labels


# --- Human3.6M: moving textured objects in an RGB room ------------------------------------


@dataclass(frozen=True)
class Scene:
    """The look of one stand-in subject: room colours and object colours `[k, 3]` in [0, 1]."""

    wall: np.ndarray
    floor: np.ndarray
    object_colours: np.ndarray


def human_scene(data_seed: int, subject: str) -> Scene:
    # Subjects are named like "S11": the number seeds their look.
    rng = np.random.default_rng([data_seed, 104729, int(subject.lstrip("S"))])
    return Scene(
        wall=rng.uniform(0.25, 0.75, 3),
        floor=rng.uniform(0.1, 0.5, 3),
        object_colours=rng.uniform(0.0, 1.0, (6, 3)),
    )


def textured_objects(
    rng: np.random.Generator, scene: Scene, frames: int, size: int, objects: int = 3
) -> np.ndarray:
    """uint8 clip `[T, 3, S, S]`: `objects` striped ellipses of the scene's colours gliding at
    constant speed over a textured room, reflecting off its walls; each one's stripes turn
    at its own rate, so appearance changes as well as position."""
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    horizon = rng.uniform(0.55, 0.7)
    texture = smooth_field(rng, size, 6)[..., None]
    room = np.where(rows < horizon, scene.wall, scene.floor) * (0.75 + 0.5 * texture)
    canvas = np.repeat(room[None].astype(np.float32), frames, axis=0)
    grid = np.arange(size, dtype=np.float32) + 0.5
    unit = size / 64
    for _ in range(objects):
        radii = (rng.uniform(5, 12, 2) * unit).astype(np.float32)
        start = rng.uniform(radii.max(), size - radii.max(), 2)
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.8, 2.5) * unit
        velocity = np.outer(np.array([np.cos(angle), np.sin(angle)]) * speed, np.ones(frames))
        centre = np.stack(
            [triangle_wave(start[i], velocity[i], radii[i], size - radii[i]) for i in (0, 1)], -1
        ).astype(np.float32)
        dx = grid[None, None, :] - centre[:, 0, None, None]
        dy = grid[None, :, None] - centre[:, 1, None, None]
        # Soft edge about one pixel wide: coverage falls from 1 to 0 across the outline.
        distance = np.sqrt((dx / radii[0]) ** 2 + (dy / radii[1]) ** 2)
        coverage = np.clip((1 - distance) * radii.min(), 0, 1)[..., None]
        turn = rng.uniform(0, np.pi) + rng.uniform(-0.15, 0.15) * np.arange(
            frames, dtype=np.float32
        )
        along = dx * np.cos(turn)[:, None, None] + dy * np.sin(turn)[:, None, None]
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / (rng.uniform(3, 7) * unit))
        chosen = rng.choice(len(scene.object_colours), 2, replace=False)
        first, second = scene.object_colours[chosen].astype(np.float32)
        colour = first + (second - first) * stripes[..., None]
        canvas = canvas * (1 - coverage) + colour * coverage
    clip = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return clip.transpose(0, 3, 1, 2)


def human_clips(
    data_seed: int, stream: int, subjects: list[str], count: int, frames: int, size: int
) -> tuple[np.ndarray, list[str]]:
    """`count` uint8 clips `[N, T, 3, S, S]`, each in the room of one of `subjects` (taken in
    turn), and the subject of each. `stream` separates the splits' random streams."""
    rng = np.random.default_rng([data_seed, stream])
    scenes = {subject: human_scene(data_seed, subject) for subject in subjects}
    clips = np.empty((count, frames, 3, size, size), dtype=np.uint8)
    labels = []
    for index in range(count):
        subject = subjects[index % len(subjects)]
        clips[index] = textured_objects(rng, scenes[subject], frames, size)
        labels.append(subject)
    return clips, labels


# --- TaxiBJ: periodic in / out flows with hotspots -------------------------------------------

SLOTS_PER_DAY = 48  # 30-minute slots, as TaxiBJ
FLOW_GRID = 32


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def city_flows(rng: np.random.Generator, days: int, first_weekday: int) -> np.ndarray:
    """float32 `[days * 48, 2, 32, 32]` crowd flows (in, out; vehicle counts) of a synthetic
    city: residential, business and leisure hotspots whose in- and outflows follow daily
    commuting peaks that weekends flatten, over a smooth background density, with noise."""
    slots = np.arange(days * SLOTS_PER_DAY)
    hours = (slots % SLOTS_PER_DAY + 0.5) * 24 / SLOTS_PER_DAY
    weekend = ((slots // SLOTS_PER_DAY + first_weekday) % 7 >= 5).astype(np.float32)
    commute = 1.0 - 0.7 * weekend
    morning, evening = _bump(hours, 8.0, 1.2) * commute, _bump(hours, 18.0, 1.5) * commute
    midday = _bump(hours, 13.5, 3.0) * (1.0 + 0.6 * weekend)
    awake = 0.15 + 0.85 * _bump(hours, 14.0, 5.0)
    # Daily profiles `[slots]` of (inflow, outflow) for each kind of place.
    profiles = {
        "residential": (0.1 + 0.3 * morning + 1.0 * evening, 0.1 + 1.0 * morning + 0.3 * evening),
        "business": (0.1 + 1.0 * morning + 0.3 * midday, 0.1 + 0.2 * morning + 1.0 * evening),
        "leisure": (0.1 + 0.9 * midday + 0.4 * evening, 0.1 + 0.6 * midday + 0.7 * evening),
    }
    grid = np.arange(FLOW_GRID, dtype=np.float32)
    flows = np.zeros((len(slots), 2, FLOW_GRID, FLOW_GRID), dtype=np.float32)
    density = 20 + 60 * smooth_field(rng, FLOW_GRID, 5)
    flows += (awake[:, None, None, None] * density).astype(np.float32)
    kinds = ["residential"] * 4 + ["business"] * 3 + ["leisure"] * 2
    for kind in kinds:
        row, column = rng.uniform(3, FLOW_GRID - 3, 2)
        width = rng.uniform(1.5, 4.0)
        spot = np.exp(
            -((grid[:, None] - row) ** 2 + (grid[None, :] - column) ** 2) / (2 * width**2)
        )
        peak = rng.uniform(200, 700)
        for channel, profile in enumerate(profiles[kind]):
            flows[:, channel] += (peak * profile)[:, None, None].astype(np.float32) * spot
    # Day-to-day variation and cell-level noise, multiplicative as counts are.
    daily = rng.lognormal(0.0, 0.08, days).repeat(SLOTS_PER_DAY)
    noise = rng.lognormal(0.0, 0.1, flows.shape).astype(np.float32)
    return flows * daily[:, None, None, None].astype(np.float32) * noise


def taxibj_clips(
    data_seed: int, counts: dict[str, int], frames: dict[str, int], days: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """float16 clips `[N, T, 2, 32, 32]` in [0, 1] of each split (train, val, test, keyed as
    the arguments) cut from one synthetic series of `days[split]` consecutive days per split
    in that order: `counts[split]` clips of `frames[split]` slots, train windows drawn at
    random from the train days, val and test windows evenly spaced over their days, none
    spanning two splits. Scaled by the min / max of the train days, which are returned for
    the inverse mapping."""
    rng = np.random.default_rng([data_seed, 4])
    flows = city_flows(rng, sum(days.values()), int(rng.integers(7)))
    boundary = days["train"] * SLOTS_PER_DAY
    low, high = float(flows[:boundary].min()), float(flows[:boundary].max())
    scaled = np.clip((flows - low) / (high - low), 0.0, 1.0).astype(np.float16)
    starts = {
        "train": np.sort(
            rng.choice(boundary - frames["train"] + 1, size=counts["train"], replace=False)
        )
    }
    first = boundary
    for split in ("val", "test"):
        last = first + days[split] * SLOTS_PER_DAY - frames[split]
        starts[split] = np.linspace(first, last, counts[split]).round().astype(int)
        first += days[split] * SLOTS_PER_DAY
    clips = {
        split: scaled[chosen[:, None] + np.arange(frames[split])]
        for split, chosen in starts.items()
    }
    return clips, {"min": low, "max": high}
