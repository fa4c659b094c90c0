"""`firekd predict` benchmark (not a test): frames/s of every artefact kind on a synthetic video,
measured side by side in one run.

    python benchmarks/predict.py --work /tmp/bench_predict

It writes a synthetic video (--video_px square frames, 10 fps, H.264) and the student at 224 px in
every deployed form (fp32 checkpoint, pruned 40%, torch int8 compiled with inductor, ONNX fp32,
ONNX int8; random weights and random calibration: speed does not depend on them), then runs
`firekd predict`'s own code path on the video for each artefact at batch 1 and 8 with 1 and 2
threads, and prints:

1. model frames/s per artefact, batch and threads (decode and model timed separately);
2. decoding against the fastest model: decode frames/s (PyAV decode + resize to 224 px) must be at
   least 3x the fastest model's;
3. peak memory (max RSS of a fresh `firekd predict` process) on a --short_s and a --long_s video:
   streamed, so within 10% of each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from firekd.checkpoints import save_model
from firekd.compress.artifacts import save_quantized
from firekd.compress.onnx_export import export_onnx, quantize_onnx_int8
from firekd.compress.prune import make_permanent, prune_model
from firekd.compress.quantize import quantize_int8
from firekd.compress.structure import structure_changes
from firekd.deploy.frames import VideoFile
from firekd.deploy.synth_video import write_video
from firekd.logs import setup_logging
from firekd.models import create_student
from firekd.recipes.predict import PredictRequest, predict_input

SIZE = 224
FPS = 10


def artefacts(folder: Path) -> dict[str, Path]:
    """The student at 224 px in every deployed form."""
    torch.manual_seed(0)
    model = create_student("firekd_student").eval()
    meta = {"thresholds": [0.5, 0.5], "data": {"img_size": SIZE}}
    calibration = [torch.randn(8, 3, SIZE, SIZE) for _ in range(2)]
    paths = {"fp32 (torch)": folder / "student_best.pth", "pruned 40% (torch)": folder / "student_pruned.pth",
             "int8 (torch, compiled)": folder / "student_quantized.pth",
             "ONNX fp32": folder / "student_best.onnx", "ONNX int8": folder / "student_best_int8.onnx"}
    save_model(paths["fp32 (torch)"], model, kind="student", meta=meta)
    pruned, _ = prune_model(model, "structured", 0.4, calibration[0][:2])
    make_permanent(pruned)
    save_model(paths["pruned 40% (torch)"], pruned, kind="student", meta=meta,
               structure=structure_changes(pruned, create_student("firekd_student")))
    quantized, _ = quantize_int8(model, calibration)
    save_quantized(paths["int8 (torch, compiled)"], quantized, calibration[0], {**meta, "model_config":
                                                                                  model.model_config()})
    export_onnx(model, paths["ONNX fp32"], calibration[0])
    quantize_onnx_int8(paths["ONNX fp32"], paths["ONNX int8"], (b.numpy() for b in calibration))
    return paths


def throughput(paths: dict[str, Path], video: Path, out: Path) -> list[dict]:
    rows = []
    for (name, path), batch, threads in ((a, b, t) for a in paths.items() for b in (1, 8) for t in (1, 2)):
        result = predict_input(PredictRequest(model=str(path), input=str(video), out=str(out / "runs"),
                                              batch_size=batch, threads=threads, progress=False,
                                              thresholds=(0.5, 0.5)))
        t = result.throughput
        rows.append({"artefact": name, "batch": batch, "threads": threads, "frames": t["frames"],
                     "model frames/s": t["model_fps"], "decode frames/s": t["decode_fps"],
                     "runtime": result.deployed.runtime})
        print(f"  {name}, batch {batch}, {threads} thread(s): model {t['model_fps']:.1f} frames/s, "
              f"decode {t['decode_fps']:.1f} frames/s", flush=True)
    return rows


# a fresh process runs `firekd predict` and prints its own peak resident memory (KB on Linux)
_MEASURE = ("import resource, sys; from firekd.cli import main; code = main(sys.argv[1:]); "
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def decode_only_fps(video: Path, rounds: int = 3) -> float:
    """Frames/s of predict's video source alone (PyAV decode + resize to 224 px), median of rounds:
    inside a predict run the model's threads compete with it."""
    rates = []
    for _ in range(rounds):
        source = VideoFile(video, SIZE)
        start = time.perf_counter()
        n = sum(1 for _ in source.frames())
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def peak_rss_mb(model: Path, video: Path, out: Path) -> float:
    """Max RSS of a fresh `firekd predict` process (MB)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, "predict", "--model", str(model), "--input",
                           str(video), "--out", str(out), "--batch_size", "8", "--threads", "2"],
                          check=True, capture_output=True, text=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("maxrss "))
    return int(line.split()[1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="bench_predict", help="folder for the video, models and outputs")
    parser.add_argument("--seconds", type=float, default=10, help="video length of the throughput runs")
    parser.add_argument("--short_s", type=float, default=10, help="short video of the memory check")
    parser.add_argument("--long_s", type=float, default=60, help="long video of the memory check")
    parser.add_argument("--video_px", type=int, default=320, help="video frame size (square)")
    args = parser.parse_args()
    setup_logging(False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print("writing the artefacts and the videos ...", flush=True)
    paths = artefacts(work)

    def video(seconds: float, name: str) -> Path:
        n = int(seconds * FPS)
        fire = (np.arange(n) % 100) >= 60  # 4 s of fire in every 10 s
        return write_video(work / name, fire, fps=FPS, size=args.video_px, codec="libx264")

    clip = video(args.seconds, "clip.mp4")
    rows = throughput(paths, clip, work)
    print(f"\n## Model throughput at {SIZE} px on {clip.name} ({int(args.seconds * FPS)} frames of "
          f"{args.video_px} px, H.264)\n")
    print(tabulate([[r["artefact"], r["runtime"], r["batch"], r["threads"], f"{r['model frames/s']:.1f}",
                     f"{r['decode frames/s']:.1f}"] for r in rows],
                   headers=["artefact", "runtime", "batch", "threads", "model frames/s", "decode frames/s"],
                   tablefmt="github", disable_numparse=True))
    fastest = max(rows, key=lambda r: r["model frames/s"])
    within = float(np.median([r["decode frames/s"] for r in rows]))
    decode = decode_only_fps(clip)
    ratio = decode / fastest["model frames/s"]
    print(f"\ndecode alone (median of 3 rounds) {decode:.1f} frames/s (inside the predict runs: median "
          f"{within:.1f}); fastest model {fastest['artefact']} at batch {fastest['batch']}, "
          f"{fastest['threads']} thread(s): {fastest['model frames/s']:.1f} frames/s; ratio {ratio:.2f}x "
          f"(target >= 3x): {'met' if ratio >= 3 else 'NOT met'}")
    short, long = video(args.short_s, "short.mp4"), video(args.long_s, "long.mp4")
    model = paths["ONNX int8"]
    rss_short = peak_rss_mb(model, short, work / "mem_short")
    rss_long = peak_rss_mb(model, long, work / "mem_long")
    growth = rss_long / rss_short - 1
    print(f"\npeak memory of `firekd predict` ({model.name}, batch 8): {args.short_s:.0f} s video "
          f"{rss_short:.0f} MB, {args.long_s:.0f} s video {rss_long:.0f} MB: {100 * growth:+.1f}% "
          f"(target within 10%): {'met' if abs(growth) <= 0.10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
