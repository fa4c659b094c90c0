"""A synthetic RGB+IR fire/smoke dataset in which IR carries information RGB lacks.

Scenes: terrain/forest textures (optionally a sky band); fire = bright flame blobs in RGB and hot
blobs in IR; smoke = semi-transparent grey plumes in RGB, invisible in IR. Some fires are hidden
under dense smoke or too small and dim to see in RGB, yet plain in IR. Distractors: orange/red
objects and sun glare in RGB, warm non-fire surfaces in IR, fog or cloud that resembles smoke.
Every sample is drawn from its own generator seeded by (seed, index): deterministic for a seed and
independent of ``n`` and of the number of processes. Unlabelled pairs come from the same scene
distribution with generators of their own (seeded by (seed, index, 1)), so none repeats a labelled one.
``rgb_cue`` > 0 leaves a faint, noisy warm glow of a buried fire in RGB (drawn from a separate
generator, so the rest of the image is unchanged and 0 gives exactly the images without the option).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from firekd.errors import ConfigError

# Third word of a sample's seed: which pool it belongs to. NumPy's SeedSequence pads the entropy
# with zeros, so [seed, index, 0] is the [seed, index] that labelled samples have always used.
LABELLED, UNLABELLED = 0, 1


@dataclass(frozen=True)
class SynthConfig:
    n: int = 2000
    size: int = 64
    seed: int = 0
    fire_rate: float = 0.45
    smoke_rate: float = 0.45
    hidden_fire_rate: float = 0.5  # of fires that have smoke: flame buried under the plume in RGB
    small_fire_rate: float = 0.25  # of the other fires: tiny and dim in RGB, still hot in IR
    distractor_rate: float = 0.35  # probability of each distractor kind per image
    rgb_cue: float = 0.0  # strength of the warm glow a fire buried under smoke leaves in RGB (1: plain)
    unlabeled: int = 0  # extra pairs written without labels (unlabeled.csv)
    side_labels: bool = False  # also write the scene's side variables as columns (SIDE_VARIABLES)

    def __post_init__(self) -> None:
        if not 0 <= self.rgb_cue <= 1:
            raise ConfigError(f"--rgb_cue must be between 0 and 1, got {self.rgb_cue}")
        if self.unlabeled < 0 or self.seed < 0:
            raise ConfigError(f"--unlabeled and --seed must be >= 0, got {self.unlabeled} and {self.seed}")


@dataclass(frozen=True)
class SynthSample:
    rgb: np.ndarray  # uint8 (S,S,3)
    ir: np.ndarray  # uint8 (S,S)
    fire: int
    smoke: int
    hidden_fire: bool  # fire present but not visible in RGB
    side: dict[str, int] = field(default_factory=dict)  # the scene's side variables (SIDE_VARIABLES)


# What a scene holds besides fire and smoke, each 0/1: labels a teacher can be pretrained on without
# ever seeing the task's (a stand-in for ImageNet weights that carries no fire/smoke labels).
SIDE_VARIABLES = {
    "sky": "a sky band above the horizon (RGB and IR)",
    "forest": "forest terrain (else grass, soil or burnt ground)",
    "orange_object": "an orange or red object that is not hot (RGB only)",
    "glare": "sun glare (RGB only)",
    "warm_surface": "a warm non-fire surface, road or roof (IR, grey in RGB)",
    "haze": "fog or cloud that resembles smoke (RGB only)",
}


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random cells x cells grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    layers = [_noise(rng, size, c) * w for c, w in ((3, 0.5), (6, 0.3), (12, 0.2))]
    return sum(layers)


def _blob(size: int, cx: float, cy: float, sx: float, sy: float, angle: float = 0.0) -> np.ndarray:
    """Anisotropic Gaussian in [0, 1] centred at (cx, cy), rotated by ``angle`` radians."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def _blend(rgb: np.ndarray, color, alpha: np.ndarray) -> np.ndarray:
    return rgb * (1 - alpha[..., None]) + np.asarray(color, np.float32) * alpha[..., None]


def _terrain(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, int, str]:
    """RGB and IR background; returns the row where the ground starts (sky above) and the terrain."""
    tex, veg = _fractal(rng, s), _fractal(rng, s)
    palettes = {"forest": ((0.10, 0.22, 0.08), (0.05, 0.12, 0.04)),
                "grass": ((0.45, 0.50, 0.20), (0.25, 0.35, 0.12)),
                "soil": ((0.45, 0.35, 0.22), (0.30, 0.25, 0.15)),
                "burnt": ((0.22, 0.20, 0.18), (0.12, 0.11, 0.10))}
    terrain = str(rng.choice(list(palettes)))
    ground, trees = palettes[terrain]
    tree_mask = (veg > rng.uniform(0.4, 0.6)).astype(np.float32)
    rgb = np.asarray(ground, np.float32) * (0.6 + 0.8 * tex[..., None])
    rgb = _blend(rgb, trees, tree_mask * 0.8)
    ir = 0.30 + 0.10 * tex - 0.06 * tree_mask  # vegetation is cooler than soil
    horizon = int(s * rng.uniform(0.15, 0.35)) if rng.random() < 0.4 else 0
    if horizon:
        sky = np.linspace(0.9, 0.6, horizon, dtype=np.float32)[:, None, None]
        rgb[:horizon] = sky * np.asarray((0.55, 0.70, 0.95), np.float32)
        ir[:horizon] = 0.08
    return rgb * rng.uniform(0.7, 1.2), ir, horizon, terrain


def _flame_color(intensity: np.ndarray) -> np.ndarray:
    """White-yellow core through orange to red rim."""
    r = np.clip(0.75 + 0.6 * intensity, 0, 1)
    g = np.clip(0.15 + 0.95 * intensity, 0, 1)
    b = np.clip(-0.2 + 0.8 * intensity, 0, 1)
    return np.stack([r, g, b], axis=-1)


def _add_fire(rng, rgb, ir, s, horizon, visible: float, small: bool):
    """One flame: visible in RGB with opacity ``visible``; always hot in IR. Returns its centre."""
    cx, cy = rng.uniform(0.1 * s, 0.9 * s), rng.uniform(max(horizon, 0.2 * s), 0.9 * s)
    r = s * (rng.uniform(0.015, 0.03) if small else rng.uniform(0.05, 0.11))
    flame = _blob(s, cx, cy - r * 0.5, r, r * 1.8) * (0.7 + 0.6 * _noise(rng, s, 8))
    flame = np.clip(flame, 0, 1)
    alpha = np.clip(flame * 1.6, 0, 1) * visible
    rgb[:] = rgb * (1 - alpha[..., None]) + _flame_color(flame) * alpha[..., None]
    heat = _blob(s, cx, cy, r * 1.4 + 1.0, r * 1.6 + 1.0)
    ir[:] = np.where(heat > 0.15, np.maximum(ir, 0.5 + 0.5 * heat), ir)
    return cx, cy, r


def _add_plume(rng, rgb, s, cx, cy, density: float, grey: float):
    """Smoke plume rising and drifting from (cx, cy)."""
    angle = rng.uniform(-0.6, 0.6) - np.pi / 2  # mostly upward
    length = s * rng.uniform(0.25, 0.5)
    width = s * rng.uniform(0.12, 0.25)
    mx, my = cx + 0.5 * length * np.cos(angle), cy + 0.5 * length * np.sin(angle)
    plume = _blob(s, mx, my, length, width, angle) * (0.6 + 0.6 * _noise(rng, s, 6))
    plume = np.maximum(plume, _blob(s, cx, cy, width * 0.9, width * 0.9))  # dense at the source
    rgb[:] = _blend(rgb, (grey, grey, grey * 0.98), np.clip(plume * density, 0, 0.95))


def _add_distractors(rng, rgb, ir, s, rate: float) -> dict[str, int]:
    """Each distractor kind with probability ``rate``; returns which were added (0/1 by kind)."""
    added = dict.fromkeys(("orange_object", "glare", "warm_surface", "haze"), 0)
    if rng.random() < rate:  # orange/red object: roof, vehicle, tent (not hot)
        added["orange_object"] = 1
        x0, y0 = rng.integers(0, s - 8, size=2)
        w, h = rng.integers(4, max(5, s // 4), size=2)
        color = rng.choice([(0.9, 0.35, 0.05), (0.8, 0.1, 0.05), (0.95, 0.55, 0.1)])
        rgb[y0:y0 + h, x0:x0 + w] = color
    if rng.random() < rate:  # sun glare: bright yellow-white radial gradient
        added["glare"] = 1
        glare = _blob(s, rng.uniform(0, s), rng.uniform(0, 0.5 * s), s * 0.12, s * 0.12)
        rgb[:] = _blend(rgb, (1.0, 0.95, 0.75), np.clip(glare * 1.3, 0, 0.9))
    if rng.random() < rate:  # warm non-fire surface in IR: road or roof in the sun
        added["warm_surface"] = 1
        x0, y0 = rng.integers(0, s - 8, size=2)
        w, h = rng.integers(6, max(7, s // 3), size=2)
        ir[y0:y0 + h, x0:x0 + w] = rng.uniform(0.42, 0.52)
        rgb[y0:y0 + h, x0:x0 + w] = _blend(rgb[y0:y0 + h, x0:x0 + w], (0.45, 0.45, 0.45),
                                           np.full((min(h, s - y0), min(w, s - x0)), 0.7, np.float32))
    if rng.random() < rate:  # fog or cloud: broad whitish haze, easily mistaken for smoke
        added["haze"] = 1
        haze = _noise(rng, s, 3) * rng.uniform(0.35, 0.6)
        rgb[:] = _blend(rgb, (0.85, 0.86, 0.88), haze)
    return added


def _add_glow(rng, rgb, s, cx, cy, r, strength: float):
    """The trace of a buried flame: a dim, patchy orange glow through the plume, its opacity
    proportional to ``strength`` (about 0.7 at 1, under 0.2 at 0.2) and varying per fire."""
    glow = _blob(s, cx, cy - r * 0.5, 2.0 * r + 1.0, 2.4 * r + 1.0) * (0.5 + 0.7 * _noise(rng, s, 8))
    level = strength * rng.uniform(0.6, 1.0)
    rgb[:] = _blend(rgb, (1.0, 0.5, 0.12), np.clip(0.75 * level * glow, 0, 0.9))


def make_sample(config: SynthConfig, index: int, *, unlabeled: bool = False) -> SynthSample:
    """Sample ``index`` of the labelled pool, or of the unlabelled one (a different scene)."""
    key = [config.seed, index, UNLABELLED if unlabeled else LABELLED]
    rng = np.random.default_rng(key)
    s = config.size
    fire = int(rng.random() < config.fire_rate)
    smoke = int(rng.random() < config.smoke_rate)
    rgb, ir, horizon, terrain = _terrain(rng, s)
    side = {"sky": int(horizon > 0), "forest": int(terrain == "forest"),
            **_add_distractors(rng, rgb, ir, s, config.distractor_rate)}
    hidden = False
    sources = []
    if fire:
        hidden = bool(smoke and rng.random() < config.hidden_fire_rate)
        small = not hidden and rng.random() < config.small_fire_rate
        for _ in range(1 if small or hidden else rng.integers(1, 3)):
            visible = rng.uniform(0.3, 0.5) if small else 1.0
            sources.append(_add_fire(rng, rgb, ir, s, horizon, visible, small))
        hidden = hidden or small
    if smoke:
        if hidden:  # bury the flame: a dense plume right on it
            cx, cy, r = sources[0]
            _add_plume(rng, rgb, s, cx, cy, density=1.0, grey=rng.uniform(0.5, 0.75))
            rgb[:] = _blend(rgb, (0.6, 0.6, 0.6), 0.92 * _blob(s, cx, cy - r * 0.5, r * 2.2, r * 2.6))
            if config.rgb_cue > 0:  # its own generator: the scene's draws stay the same
                _add_glow(np.random.default_rng([*key, 1]), rgb, s, cx, cy, r, config.rgb_cue)
        else:
            cx, cy = sources[0][:2] if sources else (rng.uniform(0, s), rng.uniform(0.3 * s, s))
            _add_plume(rng, rgb, s, cx, cy, density=rng.uniform(0.55, 0.9),
                       grey=rng.uniform(0.45, 0.85))
    rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
    ir += rng.normal(0, 0.015, ir.shape).astype(np.float32)
    to_u8 = lambda a: np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return SynthSample(to_u8(rgb), to_u8(ir), fire, smoke, hidden and bool(fire), side)


def _make_chunk(args: tuple[SynthConfig, range, bool]) -> list[SynthSample]:
    config, indices, unlabeled = args
    return [make_sample(config, i, unlabeled=unlabeled) for i in indices]


def generate(config: SynthConfig, workers: int = 1, chunk: int = 256, *, unlabeled: bool = False):
    """Yield the ``config.n`` labelled samples (or the ``config.unlabeled`` unlabelled ones) in index
    order; ``workers`` > 1 uses processes (same output)."""
    total = config.unlabeled if unlabeled else config.n
    chunks = [(config, range(a, min(a + chunk, total)), unlabeled) for a in range(0, total, chunk)]
    if workers <= 1 or len(chunks) == 1:
        for c in chunks:
            yield from _make_chunk(c)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for samples in pool.map(_make_chunk, chunks):
            yield from samples
