"""The `predict` command: any firekd artefact on an image folder, a CSV or a video."""

from __future__ import annotations

import argparse

from firekd.cli.args import image_size, non_negative_int, positive_float, positive_int, unit_fraction


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="run a model on an image folder, a CSV or a video; alarms for video",
        description="Run any firekd model file (student_best.pth, student_pruned.pth, "
        "student_quantized.pth, an exported .onnx, or a teacher_best.pth on a CSV of RGB/IR pairs) on "
        "--input: a folder of images, a CSV (rgb_path[,ir_path][,fire,smoke]) or a video file (decoded "
        "with PyAV, streamed). Settings (input size, thresholds, IR decoding) come from the model card "
        "beside the file (<file>.card.json, written by firekd export and the compression stage), else "
        "from the file itself. Writes predictions.csv (per file or frame: probabilities and decisions), "
        "contact_sheet.png and summary.json; for video also events.json (one entry per alarm: start, "
        "end, peak probability) and timeline.png; for labelled input metrics.json, as firekd evaluate "
        "computes them. A damaged frame or unreadable image is skipped with a warning and counted.")
    p.add_argument("--model", required=True, metavar="PATH", help="the model file")
    p.add_argument("--input", required=True, metavar="PATH", help="image folder, CSV or video file")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: ./predictions/<input name>)")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="video: keep this many frames per second of video time (default: every frame)")
    p.add_argument("--thresholds", type=unit_fraction, nargs=2, metavar=("FIRE", "SMOKE"), default=None,
                   help="decision thresholds (default: the model's validation-tuned ones, from its card)")
    p.add_argument("--img_size", type=image_size, default=None,
                   help="input size in pixels (default: from the card or the file)")
    p.add_argument("--batch_size", type=positive_int, default=8, help="frames per forward pass (default: 8)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of torch/onnxruntime (default: torch's default)")
    p.add_argument("--no_compile", dest="compile_int8", action="store_false",
                   help="run an int8 student_quantized.pth uncompiled (slower; skips 10-40 s of compiling)")
    p.add_argument("--top", type=positive_int, default=6,
                   help="frames per row of the contact sheet (highest P(fire), highest P(smoke), a "
                        "sample of the rest) (default: 6)")
    c = p.add_argument_group("class-activation maps", description="--cam draws Grad-CAM maps of the "
                             "--cam_frames frames of highest P(--cam_label), for --model and, side by "
                             "side, --cam_with (e.g. the teacher the student learnt from; an RGB+IR "
                             "teacher needs a CSV of pairs as --input). Torch checkpoints only.")
    c.add_argument("--cam", action="store_true", help="write cam_<label>.png")
    c.add_argument("--cam_label", choices=("fire", "smoke"), default="fire", help="(default: fire)")
    c.add_argument("--cam_frames", type=positive_int, default=4, help="(default: 4)")
    c.add_argument("--cam_with", default=None, metavar="PATH", help="a second model, shown beside --model")
    g = p.add_argument_group("alarms (video)", description="An alarm is raised when at least "
                             "--alarm_k of the last --alarm_n kept frames are above the label's "
                             "threshold, and ends when at most --alarm_release of them are: one noisy "
                             "frame raises nothing.")
    g.add_argument("--alarm_k", type=positive_int, default=3, help="(default: 3)")
    g.add_argument("--alarm_n", type=positive_int, default=5, help="(default: 5)")
    g.add_argument("--alarm_release", type=non_negative_int, default=0, help="(default: 0)")
    d = p.add_argument_group("CSV input")
    d.add_argument("--base_path", default=None, help="folder relative paths start from (default: the CSV's)")
    for column, default in (("rgb", "found by alias"), ("ir", "found by alias"), ("fire", "fire"),
                            ("smoke", "smoke")):
        d.add_argument(f"--{column}_col", default=None,
                       help=f"name of the {column} column (default: {default})")
    p.set_defaults(func=run_predict, split_col=None, group_col=None)


def run_predict(args: argparse.Namespace) -> int:
    from firekd.cli.args import column_names
    from firekd.deploy.alarms import AlarmRule
    from firekd.recipes.predict import PredictRequest, predict_input

    req = PredictRequest(model=args.model, input=args.input, out=args.out, fps=args.fps,
                         thresholds=tuple(args.thresholds) if args.thresholds else None,
                         img_size=args.img_size, batch_size=args.batch_size, threads=args.threads,
                         rule=AlarmRule(args.alarm_k, args.alarm_n, args.alarm_release),
                         base_path=args.base_path, columns=column_names(args), top=args.top,
                         compile_int8=args.compile_int8, cam=args.cam, cam_label=args.cam_label,
                         cam_frames=args.cam_frames, cam_with=args.cam_with)
    result = predict_input(req)
    for line in summary_lines(result):
        print(line)
    return 0


def summary_lines(result) -> list[str]:
    d, t = result.deployed, result.throughput
    lines = [f"{d.kind} {d.path} ({d.runtime}, {d.img_size} px, thresholds fire {d.thresholds[0]:.3f} "
             f"smoke {d.thresholds[1]:.3f} from {d.thresholds_from}) on {t['frames']} "
             f"{'frames' if result.source_kind == 'video' else 'images'}"
             + (f", {t['skipped']} skipped (unreadable)" if t["skipped"] else "")]
    lines.append(f"throughput: decode {t['decode_fps']:.1f} frames/s ({t['decode_s']:.2f} s), model "
                 f"{t['model_fps']:.1f} frames/s ({t['model_s']:.2f} s)")
    table = result.table
    for label in ("fire", "smoke"):
        positives = int(table[f"{label}_pred"].sum())
        alarms = [e for e in result.events if e.label == label]
        text = f"{label}: {positives} of {len(table)} above threshold"
        if result.source_kind == "video":
            spans = ", ".join(f"frames {table.iloc[e.start]['index']:.0f}-{table.iloc[e.end]['index']:.0f} "
                              f"(peak {e.peak_prob:.2f})" for e in alarms[:5])
            text += f"; {len(alarms)} alarm(s)" + (f": {spans}" if spans else "")
        lines.append(text)
    m = result.metrics
    if m is not None:
        lines.append(f"labelled ({m['n']}): F1 macro {m['f1_macro']:.4f} (bootstrap 95% CI "
                     f"[{m['f1_macro_boot_low']:.4f}, {m['f1_macro_boot_high']:.4f}]), F1 fire "
                     f"{m['f1_fire']:.4f}, F1 smoke {m['f1_smoke']:.4f}")
    lines.append("written: " + ", ".join(str(p) for p in result.files.values()))
    return lines
