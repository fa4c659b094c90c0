"""The `models` command: every teacher and student with its parameters and GFLOPs."""

from __future__ import annotations

import argparse

from firekd.cli.args import image_size


def register(sub) -> None:
    p = sub.add_parser("models", help="list teachers and students with parameters and GFLOPs",
                       description="Build every registered teacher (RGB+IR, with its fusion) and "
                       "student with random weights, one at a time, and print a table of their "
                       "parameters (millions), GFLOPs for one image (torch's FlopCounterMode: 2 "
                       "FLOPs per multiply-add) and embedding size. Nothing is downloaded or "
                       "written.")
    p.add_argument("--img_size", type=image_size, default=224,
                   help="image side in pixels the models are built for and measured at, a "
                        "multiple of 32 (default: 224)")
    p.add_argument("--ir_channels", type=int, choices=(1, 3), default=1,
                   help="IR channels the teachers take: 1 for grayscale/16-bit/radiometric IR, "
                        "3 for colour-mapped IR; changes only the IR stem (default: 1)")
    p.add_argument("--teachers", nargs="+", metavar="NAME", default=None,
                   help="teachers to list, by name or alias (default: all registered)")
    p.add_argument("--students", nargs="+", metavar="NAME", default=None,
                   help="students to list: firekd_student and/or any timm model name "
                        "(default: firekd_student mobilenetv3_small_100)")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from firekd.models.summary import model_rows

    rows = model_rows(img_size=args.img_size, ir_channels=args.ir_channels,
                      teachers=args.teachers, students=args.students)
    headers = ["kind", "name", "aliases", "input", "fusion", "params (M)", "spec params (M)",
               f"GFLOPs @{args.img_size}px", "embed dim"]
    table = [[r.kind, r.name, r.aliases, r.inputs, r.fusion, f"{r.params_m:.2f}",
              "-" if r.spec_params_m is None else f"~{r.spec_params_m:g}", f"{r.gflops:.2f}",
              r.embed_dim] for r in rows]
    print(tabulate(table, headers=headers, tablefmt="github", disable_numparse=True))
    return 0
