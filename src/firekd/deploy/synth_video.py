"""A synthetic surveillance video with known fire frames, for tests and benchmarks: a fixed terrain
scene with sensor noise, and a flickering flame (the synthetic dataset's flame colours) in the frames
marked as fire. Written with PyAV, frame by frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firekd.data.synthetic import _blob, _flame_color, _fractal


def scene(size: int, seed: int = 0) -> np.ndarray:
    """float32 (S,S,3) in [0, 1]: grass and trees."""
    rng = np.random.default_rng(seed)
    tex, veg = _fractal(rng, size), _fractal(rng, size)
    ground = np.asarray((0.40, 0.45, 0.20), np.float32) * (0.6 + 0.8 * tex[..., None])
    trees = (veg > 0.5).astype(np.float32)[..., None]
    canopy = np.asarray((0.08, 0.18, 0.06), np.float32)
    return np.clip(ground * (1 - 0.8 * trees) + canopy * 0.8 * trees, 0, 1)


def video_frame(background: np.ndarray, fire: bool, rng: np.random.Generator) -> np.ndarray:
    """uint8 (S,S,3): the scene with noise, and a flame when ``fire``."""
    s = background.shape[0]
    rgb = background + rng.normal(0, 0.02, background.shape).astype(np.float32)
    if fire:
        r = s * rng.uniform(0.13, 0.15)  # a flickering flame of about the same size
        flame = np.clip(_blob(s, s * 0.5, s * 0.55, r, r * 1.8) * rng.uniform(1.0, 1.15), 0, 1)
        alpha = np.clip(flame * 1.6, 0, 1)[..., None]
        rgb = rgb * (1 - alpha) + _flame_color(flame) * alpha
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_video(path: str | Path, fire: np.ndarray, *, fps: int = 10, size: int = 64, seed: int = 0,
                codec: str = "mpeg4", quality: int | None = None) -> Path:
    """Write ``len(fire)`` frames (fire: (T,) bool) at ``fps``; returns the path."""
    import av

    path = Path(path)
    rng = np.random.default_rng(seed)
    background = scene(size, seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if quality is not None:
            key = "qscale" if codec in ("mpeg4", "mjpeg") else "crf"
            stream.options = {key: str(quality)}
        for flag in np.asarray(fire, dtype=bool):
            frame = av.VideoFrame.from_ndarray(video_frame(background, bool(flag), rng), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
