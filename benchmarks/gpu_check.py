"""The one prepared GPU check: training throughput, memory, KD cost, host syncs and a short ablation.

    python benchmarks/gpu_check.py OUT_DIR [--smoke] [--teachers resnet152 ...] [--budget_s 420]

Writes three files and nothing else into OUT_DIR: gpu_check.json (rewritten after every section
and model, so a run killed on its time limit still leaves what it measured), gpu_check.md (the
table, also printed) and gpu_check.log (this script's log, then the tail of the ablation's).
Data, cache, checkpoints and the ablation's tree go to a temporary folder (--work_dir to keep
them), removed at the end. Children (the ablation) end with the script: their own process group,
killed on exit, on SIGTERM/SIGINT/SIGHUP, and by the kernel (PR_SET_PDEATHSIG) if it is SIGKILLed.
Sections, at 224 px on CUDA (bf16 autocast and channels_last as firekd's Runtime chooses them):

1. environment: GPU, torch, precision, CUDA capability, which optional packages are present;
2. data: synthetic RGB+IR pairs written and the decoded cache built through firekd's data path;
3. training: per teacher and the student, (a) model-only img/s of firekd's train_step on tensors
   already on the device, (b) end-to-end img/s of firekd's own loop (cache -> loader -> device
   augmentation -> train_epoch), the ratio (b)/(a) (target >= 0.9) and peak memory, (c) a whole
   epoch as a stage runs it (training, validation, the checkpoints `end_epoch` writes) in
   training img/s, and its ratio to (a) (target >= 0.9 for teachers, >= 0.8 for the student);
   models in order of cost (the student, then the cheapest teachers), so a budget running out
   costs the dearest;
4. kd: img/s of a kl_contrastive_l2_bce student step with the frozen teacher against the student
   alone: the teacher forward's share of a KD step;
5. syncs: one epoch of the end-to-end KD loop under torch.cuda.set_sync_debug_mode("warn"),
   host syncs per step (by design only every log_every steps and at the epoch's end);
6. ablation: `firekd ablation` to the end (resnet18, the three KD variants and bce, one seed, with
   compression; the smoke run: kl_contrastive_l2_bce and bce) and `firekd compare` on its output.

Ratios measured in one run are the point; absolute img/s are recorded next to the H200 anchors.
A global time budget skips what no longer fits, each with its reason, and is checked inside each
model's measurement too (each model gets a fair share of what is left; a measurement past it stops
with the steps it has, noted); sections never stop the script: an error is recorded and the next
section runs. ``--smoke`` runs the same code on the CPU
at 32 px with a handful of pairs and steps (CI: tests/test_gpu_check.py). The exit code is 1 when
a section ended in an error.

On a GPU machine that lacks some of firekd's dependencies, bring their wheels (e.g. in build/wheels,
made here with `pip download --no-deps -d build/wheels filelock tabulate torch-pruning umap-learn
pynndescent "torchao==0.17.*"`) and run, from the checkout (its src/ is used, nothing to install):

    python -m pip install --no-deps --no-index build/wheels/*.whl; python benchmarks/gpu_check.py "$OUT/gc"

Without them the sections that need them are skipped or narrowed, with the reason in the JSON:
filelock (firekd.rundir imports it): data, end-to-end, syncs and ablation; torchao/torch-pruning:
the ablation without compression; umap-learn/pynndescent: without embedding figures; tabulate: the
ablation's closing table and `firekd compare` fail after the results are written.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "firekd").is_dir():  # measure the checkout this script belongs to
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (tests), not run
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _children import end_children, install_exit_handlers, start_child  # noqa: E402

from firekd.config import ExecConfig  # noqa: E402
from firekd.engine.loop import FitConfig, make_optimizer, train_step  # noqa: E402
from firekd.engine.runtime import Runtime, make_grad_scaler, resolve_device  # noqa: E402
from firekd.kd.distiller import Distiller, Supervised  # noqa: E402
from firekd.kd.variants import KD_VARIANTS, VARIANTS  # noqa: E402
from firekd.models import create_student, create_teacher  # noqa: E402
from firekd.models.memory import GiB, estimate_teacher_memory, free_device_bytes, should_checkpoint  # noqa: E402

SPEC_TEACHERS = ("resnet152", "efficientnet_b7", "swin_tiny", "vit_b_16")
STUDENT = "firekd_student"
# H200, bf16, channels_last, 224 px, batch 64, model-only training img/s (docs/design.md, Speed)
ANCHORS = {"resnet152": 1736, "efficientnet_b7": 548, "swin_tiny": 2178, "vit_b_16": 2666, STUDENT: 6541}
KD_VARIANT = "kl_contrastive_l2_bce"
ALL_VARIANTS = (*KD_VARIANTS, "bce")
SMOKE_VARIANTS = (KD_VARIANT, "bce")  # every loss term and the control: half the smoke's ablation time
TARGET_RATIO = 0.9
TARGET_EPOCH_RATIO = {"teacher": 0.9, "student": 0.8}  # whole epoch / model-only
FILES = ("gpu_check.json", "gpu_check.md", "gpu_check.log")  # everything OUT_DIR receives
LOG_TAIL_LINES = 150  # of the ablation's own log, appended to gpu_check.log
CUDA_ONLY = "n/a (CUDA only)"
NO_DATA = "n/a (no data: see section data)"
SYNC_MESSAGE = "called a synchronizing"
SECTIONS = ("environment", "data", "training", "kd", "syncs", "ablation")
# optional packages the GPU machine may lack: what needs them
PACKAGES = {
    "filelock": "sections data, training (end-to-end), syncs, ablation: firekd.rundir imports it",
    "tabulate": "ablation: its closing table and `firekd compare`",
    "torchao": "ablation: int8 quantization (without it: --no_compress)",
    "torch_pruning": "ablation: structured pruning (without it: --no_compress)",
    "umap": "ablation: UMAP figures (without it: --max_embed_points 0, no t-SNE/UMAP figures)",
    "pynndescent": "ablation: UMAP figures (with umap)",
}
CPUS = os.cpu_count() or 1
FIREKD_WORKERS = ExecConfig.__dataclass_fields__["num_workers"].default
# workers: the loader's, firekd's default --num_workers (what a user gets); prep_workers: writing
# the synthetic pairs and building the cache, which is preparation, not measured against anything
GPU_DEFAULTS = {"device": "auto", "img_size": 224, "n": 4000, "batch": 64, "steps": 30, "warmup": 8,
                "loop_steps": 60, "warmup_epochs": 1, "workers": min(FIREKD_WORKERS, CPUS),
                "prep_workers": CPUS, "budget_s": 420.0, "reserve_s": 180.0,
                "ablation_n": 1200, "ablation_epochs": 2, "latency_runs": 0, "embed_points": 300,
                "calibration_batches": 8, "min_ablation_s": 60.0}
HELP = {"device": "auto, cpu, cuda or cuda:N", "img_size": "image size in px", "n": "synthetic pairs written",
        "batch": "batch size (halved on out-of-memory, noted)", "steps": "timed model-only steps",
        "warmup": "untimed model-only steps before them",
        "warmup_epochs": "untimed epochs (0 or 1) before the end-to-end, whole-epoch and syncs measurements "
                         "(workers start, cuDNN picks kernels, first files)",
        "loop_steps": "timed end-to-end steps at least (whole epochs, after the warm-up epochs)",
        "workers": "loader workers (firekd's --num_workers)",
        "prep_workers": "processes writing the pairs and building the cache",
        "budget_s": "seconds for the whole check; what no longer fits is skipped, with the reason",
        "reserve_s": "seconds kept for the ablation while models are measured",
        "ablation_n": "pairs the ablation uses (the first ones)",
        "ablation_epochs": "its teacher and student epochs",
        "latency_runs": "its --latency_runs", "embed_points": "its --max_embed_points",
        "calibration_batches": "its --calibration_batches",
        "min_ablation_s": "the ablation starts only with this much of the budget left"}
SMOKE_DEFAULTS = {"device": "cpu", "img_size": 32, "n": 64, "batch": 16, "steps": 2, "warmup": 1,
                  "loop_steps": 1, "warmup_epochs": 0, "workers": 1, "prep_workers": 1, "budget_s": 300.0,
                  "reserve_s": 120.0, "ablation_n": 64, "ablation_epochs": 1, "latency_runs": 0,
                  "embed_points": 0, "calibration_batches": 1, "min_ablation_s": 5.0}


# --- bookkeeping: clock, budget, report ---------------------------------------------------------

class Budget:
    def __init__(self, total_s: float) -> None:
        self.total_s, self.t0 = total_s, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def share(self, reserve_s: float, parts: int) -> float:
        """A deadline (perf_counter) for the next of ``parts`` measurements: a fair share of what
        is left beyond ``reserve_s``; what a cheap one leaves goes to the next ones."""
        return time.perf_counter() + max(0.0, self.left() - reserve_s) / max(1, parts)

    def skip_reason(self, reserve_s: float = 0.0, kept_for: str = "") -> str | None:
        """Why to skip what comes next: the budget is spent (``reserve_s`` kept for ``kept_for``)."""
        if self.left() > reserve_s:
            return None
        kept = f", {reserve_s:.0f}s kept for {kept_for}" if reserve_s and kept_for else ""
        return f"time budget ({self.elapsed():.0f}s of --budget_s {self.total_s:.0f}s used{kept})"


LOG_FILE: list[Path] = []  # OUT_DIR/gpu_check.log once main() has started


def log(budget: Budget, message: str) -> None:
    line = f"[gpu_check {time.strftime('%H:%M:%S')} +{budget.elapsed():6.1f}s] {message}"
    print(line, flush=True)
    if LOG_FILE:
        with open(LOG_FILE[0], "a") as f:
            f.write(line + "\n")


class Report:
    """The JSON record, rewritten (atomically) after every section and model."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.path = out / "gpu_check.json"
        self.t0 = time.perf_counter()
        self.data: dict[str, Any] = {"meta": meta, "sections": {}}

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"status": "running"})

    def save(self) -> str:
        """Write gpu_check.json and gpu_check.md (each replaced whole); returns the markdown."""
        self.data["meta"]["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        markdown = render_markdown(self)
        for path, text in ((self.path, json.dumps(rounded(self.data), indent=2, default=str) + "\n"),
                           (self.path.with_suffix(".md"), markdown)):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return markdown


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, for a readable record."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    rt: Runtime  # model-only measurements; the loop's Runtime (with its device transforms) is run.rt
    report: Report
    budget: Budget
    work: Path
    missing: dict[str, str] = field(default_factory=dict)
    bundle: Any = None  # firekd DataBundle once section "data" has run
    deadline: float = float("inf")  # perf_counter time the current model's measurement ends by
    runs: dict[int, Any] = field(default_factory=dict)  # firekd SeedRun per batch size

    @property
    def cuda(self) -> bool:
        return self.rt.cuda

    def log(self, message: str) -> None:
        log(self.budget, message)

    def past_deadline(self) -> bool:
        return time.perf_counter() > self.deadline

    def lacks(self, *packages: str) -> str | None:
        """Why something cannot run here: n/a (the missing package and what needs it), or None."""
        missing = [p for p in packages if p in self.missing]
        if not missing:
            return None
        return f"n/a ({missing[0]} is missing; it is needed by {self.missing[missing[0]]})"

    def seed_run(self, batch: int):
        """The seed-run context (runtime, loaders) of firekd's recipes at this batch size."""
        if self.bundle is None:
            data = self.report.section("data")
            why = data.get("reason") or data.get("error") or "section data did not run"
            raise RuntimeError(f"no data: {why}")
        if batch not in self.runs:
            from firekd.config import OptimConfig, RunConfig, TeacherConfig
            from firekd.io import Writer
            from firekd.recipes.context import seed_run

            cfg = RunConfig(data=self.bundle.config, optim=OptimConfig(batch_size=batch),
                            teacher=TeacherConfig(pretrained=False),
                            execution=ExecConfig(num_workers=self.args.workers, device=str(self.rt.device)))
            self.runs[batch] = seed_run(cfg, self.bundle, 0, Writer())
        return self.runs[batch]


def run_section(ctx: Context, name: str, body: Callable[[dict], None], reserve_s: float = 0.0,
                needs: tuple[str, ...] = ()) -> None:
    """Run one section into its JSON entry: ok, error (recorded, the script goes on) or skipped
    (when no more than ``reserve_s`` of the budget is left, or a package it ``needs`` is missing)."""
    entry = ctx.report.section(name)
    reason = ctx.lacks(*needs) or ctx.budget.skip_reason(reserve_s, name)
    if reason:
        entry.update(status="skipped", reason=reason)
        ctx.log(f"{name}: {reason}")
        ctx.report.save()
        return
    ctx.log(f"{name}: start")
    t0 = time.perf_counter()
    try:
        body(entry)
        if entry.get("status") == "running":
            entry["status"] = "ok"
    except Exception as exc:  # recorded; the next section still runs
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc(limit=6).splitlines()[-12:])
        ctx.log(f"{name}: ERROR {type(exc).__name__}: {exc}")
    entry["time_s"] = round(time.perf_counter() - t0, 2)
    ctx.log(f"{name}: {entry['status']} ({entry['time_s']}s)")
    ctx.report.save()


# --- timing primitives --------------------------------------------------------------------------

def clock(rt: Runtime) -> float:
    """Wall time once the device's queued work is done."""
    if rt.cuda:
        torch.cuda.synchronize(rt.device)
    return time.perf_counter()


def fit_config(weights: dict[str, float], label: str, kind: str = "student") -> FitConfig:
    """The loop's settings (grad clip, log_every, schedule) with firekd's defaults."""
    return FitConfig(kind=kind, label=label, epochs=100, lr=1e-4, weight_decay=1e-4, patience=100,
                     weights=weights, seed=0)


def resident_batch(rt: Runtime, batch: int, size: int) -> tuple:
    """A batch as the loop receives it from Runtime.to_device, already on the device."""
    rgb = torch.randn(batch, 3, size, size, device=rt.device)
    ir = torch.randn(batch, 1, size, size, device=rt.device)
    if rt.use_channels_last:
        rgb, ir = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, ir))
    labels = torch.randint(0, 2, (batch, 2), device=rt.device).float()
    return rgb, ir, labels, torch.arange(batch)


def model_only_rate(task: nn.Module, rt: Runtime, batch: tuple, weights: dict[str, float],
                    steps: int, warmup: int, deadline: float = float("inf")) -> float:
    """img/s of firekd's train_step (fused AdamW on CUDA, grad clip, scheduler) on resident tensors;
    past ``deadline`` it stops with the timed steps it has (at least one)."""
    cfg = fit_config(weights, "model-only")
    optimizer, scheduler = make_optimizer(task, cfg, warmup + steps, fused=rt.cuda)
    scaler = make_grad_scaler(rt)
    task.train()

    def step():
        train_step(task, batch, optimizer, weights, rt, grad_clip=cfg.grad_clip, scaler=scaler)
        scheduler.step()

    for _ in range(warmup):
        step()
        if time.perf_counter() > deadline:
            break
    t0, timed = clock(rt), 0
    while timed < steps and (timed == 0 or time.perf_counter() <= deadline):
        step()
        timed += 1
    return timed * len(batch[0]) / (clock(rt) - t0)


def epoch_images(loader) -> int:
    return len(loader) * loader.batch_size if loader.drop_last else len(loader.dataset)


class LoopRunner:
    """Epochs of firekd's own training loop (`firekd.engine.loop.train_epoch`) for one task, as
    fit_many runs them minus validation: data epoch set, member epoch started, one pass."""

    def __init__(self, task: nn.Module, run, weights: dict[str, float], label: str) -> None:
        from firekd.engine.loop import Member, _Progress

        self.run, self.loader = run, run.loaders.train
        self.cfg = fit_config(weights, label)
        self.progress = _Progress(Member(task, self.cfg), run.rt, len(self.loader))
        self.epoch = 0

    def one_epoch(self) -> None:
        from firekd.engine.loop import train_epoch

        self.epoch += 1
        self.run.loaders.start_epoch(self.epoch)
        self.progress.start_epoch(self.epoch)
        train_epoch([self.progress], self.loader, self.run.rt, self.epoch)

    def rate(self, min_steps: int, deadline: float = float("inf"), warmup_epochs: int = 1) -> dict:
        """``warmup_epochs`` untimed epochs (workers start, cuDNN picks kernels), then whole epochs
        timed until at least ``min_steps`` steps, or fewer (at least one epoch) past ``deadline``."""
        for _ in range(warmup_epochs):
            self.one_epoch()
        steps, seconds, epochs = 0, 0.0, 0
        while epochs == 0 or (steps < min_steps and time.perf_counter() <= deadline):
            t0 = clock(self.run.rt)
            self.one_epoch()
            seconds += clock(self.run.rt) - t0
            steps, epochs = steps + len(self.loader), epochs + 1
        return {"img_s": epochs * epoch_images(self.loader) / seconds, "steps": steps, "epochs": epochs}


class TimedCheckpointer:
    """firekd's FileCheckpointer (the files a stage writes every epoch), timing its writes."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds, self.writes = inner, 0.0, []

    def _timed(self, name: str, method: Callable, *args) -> None:
        t0 = time.perf_counter()
        method(*args)
        self.seconds += time.perf_counter() - t0
        self.writes.append(name)

    def load_last(self):
        return None  # a fresh stage

    def save_last(self, state: dict) -> None:
        self._timed("state", self.inner.save_last, state)

    def save_best(self, state: dict, epoch: int, score: float) -> None:
        self._timed("best", self.inner.save_best, state, epoch, score)

    def load_best(self):
        return self.inner.load_best()


def whole_epoch(ctx: Context, name: str, task: nn.Module, batch: int, weights: dict[str, float]) -> dict:
    """(c) Whole epochs as a stage runs them (`firekd.engine.loop.fit_many`'s body): the data epoch,
    train_epoch, validate (the teacher-output cache as a student stage uses it), end_epoch with its
    checkpoint writes. Epoch 1 warms up (validation kernels, first files); epoch 2 is timed, unless
    the model's share of the budget is spent (then epoch 1, noted) or --warmup_epochs is 0 (epoch 1
    alone, as the smoke run does)."""
    from firekd.engine.loop import Member, _Progress, train_epoch, validate
    from firekd.io import Writer
    from firekd.recipes.context import FileCheckpointer

    run = ctx.seed_run(batch)
    rt, loader = run.rt, run.loaders.train
    kind = "student" if name == STUDENT else "teacher"
    folder = ctx.work / "checkpoints" / name
    folder.mkdir(parents=True, exist_ok=True)
    model = task.trained_modules()["model"]
    ckpt = TimedCheckpointer(FileCheckpointer(folder, kind, model, kind, meta={}, writer=Writer()))
    cfg = fit_config(weights, f"{name} whole epoch", kind=kind)
    progress = _Progress(Member(task, cfg, ckpt), rt, len(loader))
    cache: dict = {}
    out: dict[str, Any] = {}
    try:
        for epoch in (1, 2)[:1 + min(1, ctx.args.warmup_epochs)]:
            if epoch == 2 and ctx.past_deadline():
                out["epoch_note"] = "epoch 1 (with its warm-up): the model's share of the budget was spent"
                break
            ckpt.seconds, ckpt.writes = 0.0, []
            t0 = clock(rt)
            run.loaders.start_epoch(epoch)
            record = progress.start_epoch(epoch)
            train = train_epoch([progress], loader, rt, epoch)[0]
            t1 = clock(rt)
            val = validate([task], [cfg], run.loaders.val, rt, teacher_cache=cache)[0]
            t2 = clock(rt)
            progress.end_epoch({**record, **train, **val, "time_s": t2 - t0})
            t3 = clock(rt)
            out.update(epoch_train_s=t1 - t0, epoch_val_s=t2 - t1, epoch_ckpt_s=t3 - t2,
                       epoch_ckpt_writes="+".join(ckpt.writes), epoch_timed=epoch)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = out["epoch_train_s"] + out["epoch_val_s"] + out["epoch_ckpt_s"]
    out["epoch_img_s"] = epoch_images(loader) / seconds
    out["val_share"] = out["epoch_val_s"] / seconds
    out["ckpt_share"] = out["epoch_ckpt_s"] / seconds
    return out


@contextlib.contextmanager
def counting_syncs(rt: Runtime) -> Iterator[list | None]:
    """Record every host sync as a warning (torch.cuda.set_sync_debug_mode("warn")); None off CUDA."""
    if not rt.cuda:
        yield None
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, also from torch's own modules
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def release(*modules: nn.Module) -> None:
    """Drop gradients and cached blocks so the next measurement starts from the model's weights."""
    for module in modules:
        for p in module.parameters():
            p.grad = None
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def with_oom_retry(measure: Callable[[int], dict], batch: int, notes: list[str],
                   cleanup: Callable[[], None]) -> dict:
    """measure(batch); on CUDA out-of-memory once more at half the batch, and so on, noted."""
    while True:
        try:
            return {"batch": batch, **measure(batch)}
        except torch.cuda.OutOfMemoryError:
            pass  # retried below, outside the handler, so the failed attempt's tensors are freed
        cleanup()
        if batch == 1:
            raise RuntimeError("out of GPU memory at batch 1")
        notes.append(f"out of memory at batch {batch}, retried at {batch // 2}")
        batch //= 2


def gib(n_bytes: float) -> float:
    return round(n_bytes / GiB, 2)


def peak_gib(rt: Runtime) -> float | str:
    return gib(torch.cuda.max_memory_allocated(rt.device)) if rt.cuda else CUDA_ONLY


def reset_peak(rt: Runtime) -> None:
    if rt.cuda:
        torch.cuda.reset_peak_memory_stats(rt.device)


# --- section 1: environment ---------------------------------------------------------------------

def package_version(name: str) -> str | None:
    dist = {"torch_pruning": "torch-pruning", "umap": "umap-learn"}.get(name, name)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_packages() -> dict[str, str]:
    return {name: why for name, why in PACKAGES.items() if importlib.util.find_spec(name) is None}


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        return done.stdout.strip() or None
    return None


def environment(ctx: Context, entry: dict) -> None:
    rt = ctx.rt
    entry.update(device=str(rt.device), torch=torch.__version__, cuda=torch.version.cuda,
                 precision=rt.precision, channels_last=rt.use_channels_last, python=platform.python_version(),
                 cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), git_commit=git_commit(),
                 packages={n: package_version(n) for n in ("timm", "torchvision", "numpy", *PACKAGES)},
                 missing=ctx.missing)
    if rt.cuda:
        props = torch.cuda.get_device_properties(rt.device)
        entry.update(gpu=props.name, capability="{}.{}".format(*torch.cuda.get_device_capability(rt.device)),
                     gpu_memory_gib=gib(props.total_memory), cudnn=torch.backends.cudnn.version())
    else:
        entry.update(gpu="n/a (CPU run)", capability="n/a (CPU run)")
    for name, why in ctx.missing.items():
        ctx.log(f"environment: {name} is missing: {why}")


# --- section 2: data ----------------------------------------------------------------------------

def build_data(ctx: Context, entry: dict) -> None:
    from firekd.config import DataConfig
    from firekd.data.synthetic import SynthConfig
    from firekd.recipes.data import load_data, open_cache
    from firekd.recipes.synth import write_synthetic

    args, folder = ctx.args, ctx.work / "data"
    t0 = time.perf_counter()
    write_synthetic(SynthConfig(n=args.n, size=args.img_size, seed=0), folder, workers=args.prep_workers)
    t1 = time.perf_counter()
    config = DataConfig(csv=str(folder / "data.csv"), img_size=args.img_size,
                        cache_dir=str(ctx.work / "cache"))
    bundle = load_data(config)
    t2 = time.perf_counter()
    bundle.source = open_cache(bundle, workers=args.prep_workers)
    t3 = time.perf_counter()
    counts = bundle.records["split_assigned"].value_counts().to_dict()
    entry.update(pairs=len(bundle.records), img_size=args.img_size,
                 split={k: int(v) for k, v in counts.items()},
                 synth_s=round(t1 - t0, 2), load_s=round(t2 - t1, 2), cache_s=round(t3 - t2, 2),
                 cache="built" if bundle.source is not None else "none (would not fit the disk)",
                 cache_pairs_per_s=round(len(bundle.records) / max(t3 - t2, 1e-9), 1))
    ctx.bundle = bundle


# --- sections 3-5: per model --------------------------------------------------------------------

def build_model(ctx: Context, name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == STUDENT:
        return create_student(STUDENT, pretrained=False)
    return create_teacher(name, img_size=ctx.args.img_size, ir_channels=1, pretrained=False)


def checkpointing(ctx: Context, name: str, batch: int) -> bool:
    """--grad_checkpointing as firekd's teacher stage decides it (auto: when memory is short)."""
    mode = ctx.args.grad_checkpointing
    if name == STUDENT or mode == "off":
        return False
    if mode == "on":
        return True
    return should_checkpoint(name, batch, ctx.args.img_size, free_device_bytes(ctx.rt.device),
                             dtype=ctx.rt.amp_dtype or torch.float32)


def teacher_memory(ctx: Context, name: str, model: nn.Module, batch: int) -> dict:
    """firekd's training-memory estimate and its activation-checkpointing decision, applied to the
    teacher; an estimator that fails is recorded, not fatal (the measurement goes on without it)."""
    try:
        checkpointed = checkpointing(ctx, name, batch)
        estimate = estimate_teacher_memory(name, batch, ctx.args.img_size, ctx.rt.amp_dtype or torch.float32)
    except Exception as exc:
        model.set_grad_checkpointing(ctx.args.grad_checkpointing == "on")
        why = f"n/a (estimate_teacher_memory: {type(exc).__name__}: {exc})"
        return {"grad_checkpointing": ctx.args.grad_checkpointing == "on", "est_gib": why}
    model.set_grad_checkpointing(checkpointed)
    return {"grad_checkpointing": checkpointed, "est_gib": gib(estimate.training_bytes(checkpointed))}


def measure_training(ctx: Context, name: str, model: nn.Module, batch: int) -> dict:
    """(a) model-only and (b) end-to-end img/s of one model's supervised training step."""
    args, rt = ctx.args, ctx.rt
    out: dict[str, Any] = {}
    if name != STUDENT:
        out.update(teacher_memory(ctx, name, model, batch))
    task = Supervised(model).to(rt.device)
    weights = VARIANTS["bce"]
    reset_peak(rt)
    out["model_only_img_s"] = model_only_rate(task, rt, resident_batch(rt, batch, args.img_size), weights,
                                              args.steps, args.warmup, ctx.deadline)
    anchor = ANCHORS.get(name)
    comparable = anchor and ctx.cuda and args.img_size == 224  # the anchors: H200, 224 px, batch 64
    out.update(anchor_img_s=anchor, vs_anchor=out["model_only_img_s"] / anchor if comparable else None)
    if ctx.bundle is None:
        out.update(e2e_img_s=NO_DATA, ratio=NO_DATA, epoch_img_s=NO_DATA, epoch_ratio=NO_DATA)
        out["peak_gib"] = peak_gib(rt)
        return out
    try:
        loop = LoopRunner(task, ctx.seed_run(batch), weights, f"{name} end-to-end").rate(
            args.loop_steps, ctx.deadline, args.warmup_epochs)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # the model-only rate stands; say why the loop has none
        out.update(e2e_img_s=f"n/a ({type(exc).__name__}: {exc})", ratio="n/a")
    else:
        out.update(e2e_img_s=loop["img_s"], e2e_steps=loop["steps"],
                   ratio=loop["img_s"] / out["model_only_img_s"])
        out["meets_target"] = out["ratio"] >= TARGET_RATIO
    try:
        epoch = whole_epoch(ctx, name, task, batch, weights)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:
        out.update(epoch_img_s=f"n/a ({type(exc).__name__}: {exc})", epoch_ratio="n/a")
    else:
        target = TARGET_EPOCH_RATIO["student" if name == STUDENT else "teacher"]
        out.update(epoch, epoch_ratio=epoch["epoch_img_s"] / out["model_only_img_s"], epoch_target=target)
        out["epoch_meets_target"] = out["epoch_ratio"] >= target
    out["peak_gib"] = peak_gib(rt)
    return out


def measure_kd(ctx: Context, teacher: nn.Module, batch: int, alone: dict) -> tuple[dict, nn.Module]:
    """Section 4: img/s of a KD step (the frozen teacher's forward, the student's step) on resident
    tensors, against the student alone. Returns the numbers and the KD task (for section 5)."""
    args, rt = ctx.args, ctx.rt
    torch.manual_seed(0)
    student = rt.prepare_model(create_student(STUDENT, pretrained=False))
    weights = VARIANTS[KD_VARIANT]
    task = Distiller(student, teacher, set(weights)).to(rt.device)
    reset_peak(rt)
    kd_rate = model_only_rate(task, rt, resident_batch(rt, batch, args.img_size), weights, args.steps,
                              args.warmup, ctx.deadline)
    out = {"kd_img_s": kd_rate, "peak_gib": peak_gib(rt)}
    if isinstance(alone.get("model_only_img_s"), float):
        out.update(student_alone_img_s=alone["model_only_img_s"], student_alone_batch=alone.get("batch"),
                   kd_time_ratio=alone["model_only_img_s"] / kd_rate,
                   teacher_share=1 - kd_rate / alone["model_only_img_s"])
    return out, task


def measure_syncs(ctx: Context, task: nn.Module, batch: int, kd_rate: float) -> dict:
    """Section 5: --warmup_epochs warm-up epochs of the end-to-end KD loop, then one with every host
    sync counted."""
    weights = VARIANTS[KD_VARIANT]
    runner = LoopRunner(task, ctx.seed_run(batch), weights, f"KD {KD_VARIANT} end-to-end")
    for _ in range(ctx.args.warmup_epochs):
        runner.one_epoch()
    if ctx.args.warmup_epochs and ctx.past_deadline():
        raise BudgetSpent("the model's share of the budget was spent after the warm-up epoch")
    t0 = clock(runner.run.rt)
    with counting_syncs(runner.run.rt) as caught:
        runner.one_epoch()
    seconds = clock(runner.run.rt) - t0
    steps = len(runner.loader)
    e2e = epoch_images(runner.loader) / seconds
    out: dict[str, Any] = {"steps": steps, "log_every": runner.cfg.log_every, "kd_e2e_img_s": e2e,
                           "kd_e2e_ratio": e2e / kd_rate,
                           # the loop's design: one read every log_every steps, then the epoch's
                           # mean loss and one mean per loss term
                           "syncs_by_design": steps // runner.cfg.log_every + 1 + len(weights)}
    if caught is None:
        return {**out, "syncs": CUDA_ONLY, "syncs_per_step": CUDA_ONLY}
    syncs = [w for w in caught if SYNC_MESSAGE in str(w.message)]
    sources = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return {**out, "syncs": len(syncs), "syncs_per_step": len(syncs) / steps,
            "within_design": len(syncs) <= out["syncs_by_design"], "sources": dict(sources.most_common(8))}


class BudgetSpent(Exception):
    """A measurement stopped by the model's share of the budget (recorded as skipped)."""


def record(models: dict, name: str, measure: Callable[[], dict]) -> dict | None:
    """models[name] = the measurement with status ok, or the error; returns the measurement or None."""
    try:
        result = measure()
    except BudgetSpent as exc:
        models[name] = {"status": "skipped", "reason": f"time budget: {exc}"}
        return None
    except Exception as exc:
        models[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=8).splitlines()[-9:]}
        return None
    models[name] = {"status": "ok", **result}
    return result


def measure_models(ctx: Context) -> None:
    """Sections 3-5, model by model (each teacher built once, then freed): the student first, since
    its model-only rate is the KD section's student-alone step."""
    sections = {name: ctx.report.section(name) for name in ("training", "kd", "syncs")}
    for entry in sections.values():
        entry.update(status="running", models={})
    ctx.log("training, kd, syncs: start")
    t0 = time.perf_counter()
    names = (STUDENT, *by_cost(ctx.args.teachers))
    for k, name in enumerate(names):
        ctx.deadline = ctx.budget.share(ctx.args.reserve_s, len(names) - k)
        reason = ctx.budget.skip_reason(ctx.args.reserve_s, "the ablation")
        if reason:
            for key in ("training",) if name == STUDENT else sections:
                sections[key]["models"][name] = {"status": "skipped", "reason": reason}
            ctx.log(f"{name}: {reason}")
            continue
        measure_one(ctx, name, sections)
        release()  # the model and its tasks are gone with measure_one's frame
        ctx.report.save()
    for entry in sections.values():
        states = {m["status"] for m in entry["models"].values()}
        entry["status"] = ("error" if "error" in states else "ok" if states == {"ok"} else
                           "skipped" if states <= {"skipped"} else "partial")
        if entry["status"] != "ok":
            entry["reason"] = "; ".join(f"{name}: {m.get('error') or m.get('reason')}"
                                        for name, m in entry["models"].items() if m["status"] != "ok")
        entry["time_s"] = round(time.perf_counter() - t0, 2)
    ctx.report.save()


def by_cost(teachers: list[str]) -> list[str]:
    """Cheapest first (highest H200 anchor img/s; teachers without an anchor, e.g. resnet18/50,
    first): when the budget runs out, the dearest are the ones not measured."""
    return sorted(teachers, key=lambda name: -ANCHORS.get(name, float("inf")))


def measure_one(ctx: Context, name: str, sections: dict[str, dict]) -> None:
    ctx.log(f"{name}: building")
    notes: list[str] = []
    try:
        model = ctx.rt.prepare_model(build_model(ctx, name))
    except Exception as exc:
        for key in ("training",) if name == STUDENT else sections:
            sections[key]["models"][name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        return
    train = record(sections["training"]["models"], name, lambda: with_oom_retry(
        lambda b: measure_training(ctx, name, model, b), ctx.args.batch, notes, lambda: release(model)))
    sections["training"]["models"][name]["notes"] = notes
    if train:
        ctx.log(f"{name}: model-only {train['model_only_img_s']:.0f} img/s, end-to-end "
                f"{fmt(train['e2e_img_s'])} img/s (ratio {fmt(train['ratio'], 2)}), "
                f"peak memory {fmt(train['peak_gib'], 1)}{' GiB' * ctx.cuda}")
    release(model)
    if name != STUDENT:
        measure_teacher_kd(ctx, name, model, sections)


def measure_teacher_kd(ctx: Context, name: str, teacher: nn.Module, sections: dict[str, dict]) -> None:
    reason = ctx.budget.skip_reason(ctx.args.reserve_s, "the ablation")
    if reason:
        for key in ("kd", "syncs"):
            sections[key]["models"][name] = {"status": "skipped", "reason": reason}
        return
    alone = sections["training"]["models"].get(STUDENT, {})
    notes: list[str] = []
    held: dict[str, nn.Module] = {}

    def kd_at(batch: int) -> dict:
        out, held["task"] = measure_kd(ctx, teacher, batch, alone)
        return out

    kd = record(sections["kd"]["models"], name,
                lambda: with_oom_retry(kd_at, ctx.args.batch, notes, release))
    sections["kd"]["models"][name]["notes"] = notes
    if kd is None:
        sections["syncs"]["models"][name] = {"status": "skipped", "reason": "n/a (the KD step failed)"}
        return
    task = held.pop("task")
    if ctx.bundle is None:
        sections["syncs"]["models"][name] = {"status": "skipped", "reason": NO_DATA}
        return
    sync_notes: list[str] = []
    syncs = record(sections["syncs"]["models"], name, lambda: with_oom_retry(
        lambda b: measure_syncs(ctx, task, b, kd["kd_img_s"]), kd["batch"], sync_notes, release))
    sections["syncs"]["models"][name]["notes"] = sync_notes
    ctx.log(f"{name}: KD step {kd['kd_img_s']:.0f} img/s (teacher share {fmt(kd.get('teacher_share'), 2)})"
            + (f", KD end-to-end {syncs['kd_e2e_img_s']:.0f} img/s, {syncs['syncs']} syncs in "
               f"{syncs['steps']} steps" if syncs else ", syncs: error"))


# --- section 6: the ablation through the CLI ----------------------------------------------------

def ablation_argv(ctx: Context, csv: Path, folder: Path) -> tuple[list[str], list[str]]:
    """The `firekd ablation` command line, and what was turned off for missing packages."""
    args, notes = ctx.args, []
    argv = ["ablation", "--csv", str(csv), "--output", str(folder), "--teachers", args.ablation_teacher,
            "--variants", *args.ablation_variants, "--seeds", "0",
            "--epochs_teacher", str(args.ablation_epochs), "--epochs_student", str(args.ablation_epochs),
            "--finetune_epochs", "1", "--no_pretrained", "--img_size", str(args.img_size),
            "--batch_size", str(args.batch), "--num_workers", str(args.workers),
            "--device", str(ctx.rt.device), "--cache_dir", str(ctx.work / "cache"),
            "--latency_runs", str(args.latency_runs), "--calibration_batches", str(args.calibration_batches),
            "--overwrite"]
    if {"torchao", "torch_pruning"} & ctx.missing.keys():
        argv.append("--no_compress")
        notes.append("--no_compress: torchao or torch-pruning is missing")
    if "tabulate" in ctx.missing:
        notes.append("tabulate is missing: the ablation's closing table and firekd compare fail "
                     "(after the results are written)")
    points = args.embed_points
    if points and {"umap", "pynndescent"} & ctx.missing.keys():
        points = 0
        notes.append("--max_embed_points 0: umap-learn or pynndescent is missing")
    argv += ["--max_embed_points", str(points)]
    if args.smoke:
        argv.append("--no_quant_compile")
    return argv, notes


# Runs firekd commands one after the other in one process (one interpreter start: ~8 s on 2 cores),
# as `firekd COMMAND ...` would; each one's exit code and wall time go to a JSON file as it ends.
DRIVER = """\
import json, sys, time, traceback
from firekd.cli import main

record_path, commands = sys.argv[1], json.loads(sys.argv[2])
record = {}
for argv in commands:
    print(f"==== firekd {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    except Exception as exc:
        traceback.print_exc()
        rc = f"{type(exc).__name__}: {exc}"
    record[argv[0]] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
    with open(record_path, "w") as f:
        json.dump(record, f)
"""


def run_cli(commands: list[list[str]], log_path: Path, timeout_s: float) -> dict[str, dict]:
    """The firekd ``commands`` in a child process (its own process group, output to ``log_path``),
    killed with its loader workers past ``timeout_s`` or when this script ends:
    {command: {rc, wall_s[, tail]}}."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    record_path = log_path.with_suffix(".rc.json")
    record_path.unlink(missing_ok=True)
    with open(log_path, "w") as out:
        proc = start_child([sys.executable, "-c", DRIVER, str(record_path), json.dumps(commands)], out, env)
        try:
            end = f"exit code {proc.wait(timeout=max(1.0, timeout_s))}"
        except subprocess.TimeoutExpired:
            end = f"killed after {timeout_s:.0f}s (time budget)"
        finally:
            end_children()  # the driver's loader workers too, whatever happened
            proc.wait()
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    tail = log_path.read_text(errors="replace").splitlines()[-8:]
    for argv in commands:
        done = record.setdefault(argv[0], {"rc": f"did not finish: driver {end}"})
        if done["rc"] != 0:
            done["tail"] = tail
    return record


def f1_summary(folder: Path) -> dict[str, dict[str, float]]:
    """Test macro-F1 (mean over seeds) of every model of every run: {run: {model: f1}}."""
    out = {}
    for path in sorted((folder / "metrics").glob("*/aggregated_results.json")):
        results = json.loads(path.read_text())  # NaN (one seed's std) reads as float nan
        out[path.parent.name] = {model: round(metrics["f1_macro"]["mean"], 4)
                                 for model, metrics in results.items()
                                 if isinstance(metrics, dict) and "f1_macro" in metrics}
    return out


def ablation_csv(ctx: Context) -> Path:
    """The first --ablation_n pairs of the synthetic data (the same image files)."""
    csv = Path(ctx.bundle.config.csv)
    table = ctx.bundle.records
    if ctx.args.ablation_n >= len(table):
        return csv
    import pandas as pd

    subset = pd.read_csv(csv).head(ctx.args.ablation_n)
    path = csv.with_name("ablation.csv")
    subset.to_csv(path, index=False)
    return path


def append_log_tail(path: Path, what: str) -> None:
    """The last lines of a child's log, into gpu_check.log."""
    if not LOG_FILE or not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines()
    with open(LOG_FILE[0], "a") as f:
        f.write(f"---- {what}: last {min(len(lines), LOG_TAIL_LINES)} of {len(lines)} lines of its log\n")
        f.write("\n".join(lines[-LOG_TAIL_LINES:]) + "\n---- end\n")


def ablation(ctx: Context, entry: dict) -> None:
    if ctx.bundle is None:
        raise RuntimeError("no data (section data failed)")
    folder = ctx.work / "ablation"  # the whole tree stays in the work folder: OUT_DIR gets 3 files
    csv = ablation_csv(ctx)
    entry["pairs"] = min(ctx.args.ablation_n, len(ctx.bundle.records))
    argv, notes = ablation_argv(ctx, csv, folder)
    entry.update(command="firekd " + " ".join(argv), notes=notes)
    ctx.log(f"ablation: firekd {' '.join(argv)}; then firekd compare")
    log_path = ctx.work / "ablation.log"
    try:
        entry.update(run_cli([argv, ["compare", str(folder)]], log_path, ctx.budget.left()))
    finally:
        append_log_tail(log_path, "firekd ablation + compare")
    for command in ("ablation", "compare"):
        done = entry[command]
        ctx.log(f"ablation: firekd {command} rc {done['rc']} in {done.get('wall_s', '-')}s")
    entry["f1_macro"] = f1_summary(folder)
    entry["compressed"] = any("student_quantized" in models or "student_pruned" in models
                              for models in entry["f1_macro"].values())
    codes = entry["ablation"]["rc"], entry["compare"]["rc"]
    if codes != (0, 0):
        entry.update(status="error", error=f"firekd ablation rc {codes[0]}, firekd compare rc {codes[1]}")


# --- the table ----------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def model_row(name: str, sections: dict) -> str:
    train = sections.get("training", {}).get("models", {}).get(name, {})
    kd = sections.get("kd", {}).get("models", {}).get(name, {})
    syncs = sections.get("syncs", {}).get("models", {}).get(name, {})
    if train.get("status") != "ok":
        why = train.get("error") or train.get("reason", "")
        return f"| {name} | {train.get('status', '-')}: {why} |" + " |" * 16
    peak = fmt(train.get("peak_gib"), 1)
    if "est_gib" in train:
        peak += f" (est. {fmt(train['est_gib'], 1)})"
    kd_cells = ([fmt(kd.get("kd_img_s")), fmt(kd.get("teacher_share"), 2), fmt(kd.get("kd_time_ratio"), 1),
                 fmt(syncs.get("kd_e2e_img_s")), fmt(syncs.get("kd_e2e_ratio"), 2),
                 fmt(syncs.get("syncs_per_step"), 2)]
                if kd.get("status") == "ok" else [kd.get("status", "-")] + ["-"] * 5)
    if name == STUDENT:
        kd_cells = ["(student alone)"] + ["-"] * 5
    epoch_ratio = fmt(train.get("epoch_ratio"), 2)
    if "epoch_target" in train:
        epoch_ratio += f" (>= {train['epoch_target']})"
    cells = [name, fmt(train.get("batch")), fmt(train.get("model_only_img_s")),
             fmt(train.get("anchor_img_s")), fmt(train.get("vs_anchor"), 2), fmt(train.get("e2e_img_s")),
             fmt(train.get("ratio"), 2), fmt(train.get("epoch_img_s")), epoch_ratio,
             fmt(train.get("val_share"), 2), fmt(train.get("ckpt_share"), 2), peak, *kd_cells]
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: Report) -> str:
    meta, s = report.data["meta"], report.data["sections"]
    env, data, abl = s.get("environment", {}), s.get("data", {}), s.get("ablation", {})
    lines = [f"# firekd GPU check ({meta['mode']}, {meta['started']})", "",
             f"- device: {env.get('gpu', '-')} (capability {env.get('capability', '-')}), "
             f"torch {env.get('torch', '-')}, CUDA {env.get('cuda', '-')}, "
             f"precision {env.get('precision', '-')}, channels_last {fmt(env.get('channels_last'))}"]
    if data.get("status") == "ok":
        lines.append(f"- data: {data['pairs']} synthetic pairs at {data['img_size']} px: written in "
                     f"{fmt(data['synth_s'], 1)}s, decoded cache {data['cache']} in "
                     f"{fmt(data['cache_s'], 1)}s ({fmt(data['cache_pairs_per_s'])} pairs/s)")
    lines += [f"- missing packages: {', '.join(env.get('missing', {})) or 'none'}", "",
             "| model | batch | model-only img/s | H200 anchor | vs anchor | end-to-end img/s | "
             f"e2e / model-only (target >= {TARGET_RATIO}) | whole epoch img/s | epoch / model-only | "
             "val share | ckpt share | peak GiB | KD step img/s | teacher share | "
             "KD / student-alone time | KD end-to-end img/s | KD e2e / KD step | syncs/step |",
             "|---" * 18 + "|"]
    lines += [model_row(name, s) for name in s.get("training", {}).get("models", {})]
    run, compare = abl.get("ablation", {}), abl.get("compare", {})
    abl_line = (f"- ablation: {abl.get('status', '-')}; firekd ablation rc {run.get('rc', '-')} in "
                f"{run.get('wall_s', '-')}s, firekd compare rc {compare.get('rc', '-')}, "
                f"compressed {fmt(abl.get('compressed'))}")
    lines += ["", abl_line] if "ablation" in abl else [""]
    for name in SECTIONS:
        entry = s.get(name, {})
        if entry.get("status") not in ("ok", None):
            lines.append(f"- {name}: {entry['status']}: {entry.get('error') or entry.get('reason', '')}")
    lines.append(f"\nTotal {meta.get('elapsed_s', '-')}s of a {meta['budget_s']:.0f}s budget.")
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------

def canonical_teacher(name: str) -> str:
    """The registry's name (aliases resolved, for the anchors); an unknown name is kept and fails
    in its own row."""
    from firekd.models import resolve_teacher_name

    try:
        return resolve_teacher_name(name)
    except Exception:
        return name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="receives gpu_check.json, gpu_check.md and gpu_check.log, nothing else")
    p.add_argument("--smoke", action="store_true", help="CPU, 32 px, a handful of pairs and steps (CI)")
    p.add_argument("--teachers", nargs="+", default=None,
                   help=f"default: {' '.join(SPEC_TEACHERS)} (smoke: resnet18)")
    p.add_argument("--ablation_teacher", default="resnet18",
                   help="the ablation's teacher (default: resnet18)")
    p.add_argument("--ablation_variants", nargs="+", default=None,
                   help=f"default: {' '.join(ALL_VARIANTS)} (smoke: {' '.join(SMOKE_VARIANTS)})")
    p.add_argument("--grad_checkpointing", choices=("auto", "on", "off"), default="auto",
                   help="teachers' activation checkpointing, as firekd's flag (default: auto)")
    p.add_argument("--work_dir", default=None,
                   help="data, cache, checkpoints and the ablation's tree, kept (default: a temporary "
                        "folder, removed)")
    for name, value in GPU_DEFAULTS.items():
        p.add_argument(f"--{name}", type=type(value), default=None,
                       help=f"{HELP[name]} (default: {value}; smoke: {SMOKE_DEFAULTS[name]})")
    args = p.parse_args(argv)
    for name, value in (SMOKE_DEFAULTS if args.smoke else GPU_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.teachers is None:
        args.teachers = ["resnet18"] if args.smoke else list(SPEC_TEACHERS)
    args.teachers = [canonical_teacher(name) for name in args.teachers]
    if args.ablation_variants is None:
        args.ablation_variants = list(SMOKE_VARIANTS if args.smoke else ALL_VARIANTS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (out / name).unlink(missing_ok=True)
    LOG_FILE[:] = [out / "gpu_check.log"]
    install_exit_handlers()
    budget = Budget(args.budget_s)
    report = Report(out, {"mode": "smoke" if args.smoke else "gpu",
                          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": args.budget_s,
                          "args": vars(args), "anchors": ANCHORS})
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    rt = Runtime(resolve_device(args.device))
    if rt.cuda:
        torch.backends.cudnn.benchmark = True  # as firekd's seed_run: fixed sizes, fastest kernels
    ctx = Context(args, out, rt, report, budget, work, missing=missing_packages())
    if not rt.cuda and not args.smoke:
        ctx.log("warning: no CUDA device; measuring on the CPU (the budget skips what does not fit)")
    try:
        run_section(ctx, "environment", lambda e: environment(ctx, e))
        run_section(ctx, "data", lambda e: build_data(ctx, e), needs=("filelock",))
        measure_models(ctx)
        ctx.runs.clear()  # the loaders' worker processes end before the ablation starts its own
        release()
        run_section(ctx, "ablation", lambda e: ablation(ctx, e), reserve_s=args.min_ablation_s,
                    needs=("filelock",))
    finally:
        end_children()
        markdown = report.save()
        print("\n" + markdown, flush=True)
        with open(LOG_FILE[0], "a") as f:
            f.write("\n" + markdown)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, e in report.data["sections"].items() if e.get("status") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
