"""Deployment test helpers: a small student that truly detects the synthetic video's flame, and
the synthetic video itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from firekd.checkpoints import save_model
from firekd.data.transforms import PairedTransform
from firekd.deploy.frames import resize_rgb
from firekd.deploy.synth_video import scene, video_frame
from firekd.models.student import FireKDStudent

SIZE = 32


def flame_images(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n,3,SIZE,SIZE) video frames resized as predict resizes them, half with a flame; labels (n,)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    fire = np.arange(n) % 2 == 0
    frames = [resize_rgb(Image.fromarray(video_frame(scene(size, seed + k % 3), bool(f), rng)), SIZE)
              for k, f in enumerate(fire)]
    return np.stack(frames), fire


def toy_detector(path: Path, seed: int = 0, widths=(8, 8, 16, 16)) -> Path:
    """A firekd_student checkpoint whose fire output separates flame frames from empty ones: random
    convolutions, the linear head fitted on their embeddings (smoke: never). Thresholds 0.5."""
    torch.manual_seed(seed)
    model = FireKDStudent(widths=widths).eval()
    images, fire = flame_images(48, seed)
    rgb, _ = PairedTransform(SIZE, train=False)(torch.from_numpy(images), torch.zeros(len(images), 0, SIZE, SIZE))
    with torch.no_grad():
        embedding = model(rgb)[1]
    target = torch.stack([torch.from_numpy(fire).float(), torch.zeros(len(fire))], 1)
    head = model.fc
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    mean, std = embedding.mean(0), embedding.std(0) + 1e-6
    for _ in range(300):  # standardised embeddings: fast, stable logistic regression
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head((embedding - mean) / std), target)
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the head
        head.weight.div_(std)
        head.bias.sub_((head.weight * mean).sum(1))
    save_model(path, model, kind="student", meta={"thresholds": [0.5, 0.5], "data": {"img_size": SIZE}})
    return path


def corrupt_mjpeg_frame(path: Path, frame: int) -> Path:
    """Overwrite the JPEG data of one frame of an MJPEG .avi (its chunk header kept): FFmpeg then
    fails to decode that packet alone."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    begin, end = starts[frame], starts[frame + 1] - 16  # the next chunk's header stays intact
    data[begin:end] = bytes([0x5A]) * (end - begin)
    path.write_bytes(bytes(data))
    return path
