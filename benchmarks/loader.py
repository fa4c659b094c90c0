"""Loader throughput: decoded cache vs JPEG/PNG decoding, at 224 px, measured side by side.

    python benchmarks/loader.py [--size 224] [--workers 2] [--samples 600]

Runs on ../shared/data/fire-smoke-rgb (real RGB JPEGs; skipped when absent) and on a synthetic
RGB+IR set generated at the image size. Two numbers per dataset and source:
- samples/s of the loader alone (what feeds a GPU: on CUDA the augmentation runs on the device),
- samples/s with the CPU batch transform (augmentation + normalisation in the loader workers).
Target: cached >= 5x decoding for the loader alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import SHARED_DATA

from firekd.config import DataConfig
from firekd.data.dataset import make_loader
from firekd.data.synthetic import SynthConfig
from firekd.data.transforms import PairedTransform
from firekd.recipes.data import load_data, open_cache
from firekd.recipes.synth import write_synthetic


def throughput(bundle, *, transform, workers: int, samples: int, batch: int = 32) -> float:
    dataset = bundle.dataset("train")
    dataset.positions = dataset.positions[:samples]
    loader = make_loader(dataset, batch_size=batch, train=True, transform=transform, num_workers=workers,
                         generator=torch.Generator().manual_seed(0))
    next(iter(loader))  # start the workers before timing
    t0 = time.perf_counter()
    n = sum(len(b[0]) for b in loader)
    return n / (time.perf_counter() - t0)


def compare(name: str, config: DataConfig, args) -> None:
    bundle = load_data(config)
    files = {"transform": None, "workers": args.workers, "samples": args.samples}
    aug = PairedTransform(args.size, train=True, ir_max=bundle.ir_spec.max_value)
    decode = throughput(bundle, **files)
    decode_aug = throughput(bundle, **{**files, "transform": aug})
    t0 = time.perf_counter()
    bundle.source = open_cache(bundle, workers=args.workers)
    build = time.perf_counter() - t0
    cached = throughput(bundle, **files)
    cached_inline = throughput(bundle, **{**files, "workers": 0})
    cached_aug = throughput(bundle, **{**files, "transform": aug})
    print(f"\n{name} ({len(bundle.records)} samples, {args.size} px, {args.workers} workers; "
          f"cache built in {build:.1f}s)")
    print(f"  loader alone      decode {decode:8.1f}/s   cached {cached:8.1f}/s   "
          f"ratio {cached / decode:5.1f}x")
    print(f"  loader alone, cache read in the main process (0 workers): {cached_inline:8.1f}/s   "
          f"ratio {cached_inline / decode:5.1f}x")
    print(f"  + CPU transform   decode {decode_aug:8.1f}/s   cached {cached_aug:8.1f}/s   "
          f"ratio {cached_aug / decode_aug:5.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--samples", type=int, default=600, help="train samples timed per measurement")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FIREKD_CACHE_DIR"] = str(Path(tmp) / "cache")
        real = SHARED_DATA / "fire-smoke-rgb" / "data.csv"
        if real.exists():
            compare("fire-smoke-rgb (real RGB JPEGs)", DataConfig(csv=str(real), img_size=args.size,
                                                                   require_ir=False), args)
        else:
            print(f"skipping fire-smoke-rgb: {real} is absent")
        synth = Path(tmp) / "synth"
        write_synthetic(SynthConfig(n=int(args.samples / 0.7) + 10, size=args.size, seed=0), synth, workers=2)
        config = DataConfig(csv=str(synth / "data.csv"), img_size=args.size)
        compare("synthetic RGB+IR (JPEG + PNG)", config, args)


if __name__ == "__main__":
    main()
