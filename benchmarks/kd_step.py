"""Cost of a KD student step relative to a student-alone (BCE) step, per teacher.

    python benchmarks/kd_step.py [--img_size 64] [--batch 16] [--steps 5] [--device auto]

Both steps include forward, backward and the optimizer update of the student; the KD step adds
the frozen teacher's forward pass (under inference_mode) and the four loss terms of
kl_contrastive_l2_bce. Measured side by side in one process; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import time

import torch

from firekd.engine.loop import train_step
from firekd.engine.runtime import Runtime, resolve_device
from firekd.kd.distiller import Distiller, Supervised
from firekd.kd.variants import VARIANTS
from firekd.models import create_student, create_teacher, list_teachers


def step_time(task, rt: Runtime, rgb, ir, labels, steps: int) -> float:
    weights = VARIANTS["kl_contrastive_l2_bce"] if isinstance(task, Distiller) else VARIANTS["bce"]
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    task.train()

    def one():
        train_step(task, (rgb, ir, labels, None), opt, weights, rt)

    one()  # warm-up
    if rt.cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if rt.cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img_size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--teachers", nargs="+", default=list_teachers())
    args = p.parse_args()
    rt = Runtime(resolve_device(args.device))
    rgb = torch.randn(args.batch, 3, args.img_size, args.img_size, device=rt.device)
    ir = torch.randn(args.batch, 1, args.img_size, args.img_size, device=rt.device)
    labels = torch.randint(0, 2, (args.batch, 2), device=rt.device).float()
    torch.manual_seed(0)
    alone = step_time(Supervised(rt.prepare_model(create_student("firekd_student"))), rt, rgb, ir, labels,
                      args.steps)
    print(f"device {rt.device}, {args.img_size} px, batch {args.batch}, threads {torch.get_num_threads()}")
    print(f"student alone (bce): {alone * 1000:.1f} ms/step")
    print("| teacher | KD step (ms) | KD / student-alone |")
    print("|---|---|---|")
    for name in args.teachers:
        teacher = rt.prepare_model(create_teacher(name, img_size=args.img_size, pretrained=False))
        student = rt.prepare_model(create_student("firekd_student"))
        task = Distiller(student, teacher, set(VARIANTS["kl_contrastive_l2_bce"])).to(rt.device)
        kd = step_time(task, rt, rgb, ir, labels, args.steps)
        print(f"| {name} | {kd * 1000:.1f} | {kd / alone:.1f}x |")


if __name__ == "__main__":
    main()
