"""Write the synthetic RGB+IR dataset: rgb/*.jpg, ir/*.png, data.csv and synth.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from firekd.data.synthetic import SynthConfig, generate
from firekd.io import atomic_path, ensure_writable, write_csv, write_json


def write_synthetic(config: SynthConfig, out: str | Path, workers: int = 1) -> pd.DataFrame:
    """Generate ``config.n`` pairs under ``out``; returns the CSV table that was written."""
    out = ensure_writable(out, "--out")
    (out / "rgb").mkdir(exist_ok=True)
    (out / "ir").mkdir(exist_ok=True)
    rows = []
    samples = generate(config, workers=workers)
    for i, sample in enumerate(tqdm(samples, total=config.n, desc="synth", unit="pair", leave=False)):
        rgb_rel, ir_rel = f"rgb/{i:06d}.jpg", f"ir/{i:06d}.png"
        with atomic_path(out / rgb_rel) as tmp:
            Image.fromarray(sample.rgb).save(tmp, format="JPEG", quality=92)
        with atomic_path(out / ir_rel) as tmp:
            Image.fromarray(sample.ir).save(tmp, format="PNG")
        rows.append((rgb_rel, ir_rel, sample.fire, sample.smoke, int(sample.hidden_fire)))
    table = pd.DataFrame(rows, columns=["rgb_path", "ir_path", "fire", "smoke", "hidden_in_rgb"])
    write_csv(out / "data.csv", table)
    write_json(out / "synth.json", dataclasses.asdict(config))
    return table
