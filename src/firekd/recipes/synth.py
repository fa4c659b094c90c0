"""Write the synthetic RGB+IR dataset: rgb/*.jpg, ir/*.png, data.csv and synth.json; with
``config.unlabeled`` > 0 also unlabeled/{rgb,ir}/* and unlabeled.csv (rgb_path, ir_path only)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from firekd.data.synthetic import SIDE_VARIABLES, SynthConfig, SynthSample, generate
from firekd.io import atomic_path, ensure_writable, write_csv, write_json

log = logging.getLogger(__name__)
UNLABELED_CSV = "unlabeled.csv"


def write_synthetic(config: SynthConfig, out: str | Path, workers: int = 1) -> pd.DataFrame:
    """Generate ``config.n`` labelled pairs (and ``config.unlabeled`` unlabelled ones) under ``out``;
    returns the labelled CSV table that was written."""
    out = ensure_writable(out, "--out")
    samples = generate(config, workers=workers)
    side = list(SIDE_VARIABLES) if config.side_labels else []
    rows = [(rgb, ir, s.fire, s.smoke, int(s.hidden_fire), *(s.side[k] for k in side))
            for rgb, ir, s in _write_pairs(samples, config.n, out, "", "synth")]
    table = pd.DataFrame(rows, columns=["rgb_path", "ir_path", "fire", "smoke", "hidden_in_rgb", *side])
    write_csv(out / "data.csv", table)
    unlabeled_csv = out / UNLABELED_CSV
    if config.unlabeled:
        samples = generate(config, workers=workers, unlabeled=True)
        pairs = [(rgb, ir) for rgb, ir, _ in _write_pairs(samples, config.unlabeled, out, "unlabeled/",
                                                          "synth (unlabelled)")]
        write_csv(unlabeled_csv, pd.DataFrame(pairs, columns=["rgb_path", "ir_path"]))
    elif unlabeled_csv.exists():  # from an earlier run: it does not belong to this data.csv
        unlabeled_csv.unlink()
        log.warning("%s removed: it came from an earlier run (this one has --unlabeled 0)", unlabeled_csv)
    write_json(out / "synth.json", dataclasses.asdict(config))
    return table


def _write_pairs(samples: Iterable[SynthSample], total: int, out: Path, prefix: str,
                 desc: str) -> Iterator[tuple[str, str, SynthSample]]:
    """Save each sample as {prefix}rgb/NNNNNN.jpg and {prefix}ir/NNNNNN.png; yields the paths
    (relative to out) one sample at a time, so no image is held beyond its own step."""
    (out / prefix / "rgb").mkdir(parents=True, exist_ok=True)
    (out / prefix / "ir").mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(tqdm(samples, total=total, desc=desc, unit="pair", leave=False)):
        rgb_rel, ir_rel = f"{prefix}rgb/{i:06d}.jpg", f"{prefix}ir/{i:06d}.png"
        with atomic_path(out / rgb_rel) as tmp:
            Image.fromarray(sample.rgb).save(tmp, format="JPEG", quality=92)
        with atomic_path(out / ir_rel) as tmp:
            Image.fromarray(sample.ir).save(tmp, format="PNG")
        yield rgb_rel, ir_rel, sample
