"""The epoch loop shared by teacher training, distillation and post-pruning fine-tuning.

A task maps a batch to ``(logits, {term: raw})``; the loop applies the weights (the only place
they are applied), logs every raw term, early-stops on validation macro-F1 (at per-label max-F1
thresholds) and keeps the best weights. The loop does no file I/O: a ``Checkpointer`` given by
the recipe persists state, so a killed run resumes from its last completed epoch.

Several members (the loss variants of one seed) can train in one pass (``fit_many``): each batch
is loaded and augmented once, a shared frozen teacher runs once, and every member still training
takes its own step with its own optimizer, schedule, early stopping and random stream. A member
trained alone (``fit``) is the same loop with one member, so it gets exactly the same result.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from firekd.engine import distributed
from firekd.engine.early_stopping import EarlyStopping
from firekd.engine.runtime import Runtime, load_scaler_state, make_grad_scaler, optimizer_step
from firekd.errors import TrainingError
from firekd.kd.distiller import model_outputs
from firekd.metrics.classification import best_thresholds, classification_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    kind: str  # "teacher", "student", "finetune": names the stage's random stream
    label: str  # names the stage in logs and errors, e.g. "student kl_bce (seed 42)"
    epochs: int
    lr: float
    weight_decay: float
    patience: int
    weights: dict[str, float]
    seed: int
    grad_clip: float = 10.0
    log_every: int = 20
    warmup_fraction: float = 0.1
    save_every: int = 1  # the resume state is written every N epochs and when the member is done


class Checkpointer(Protocol):
    def load_last(self) -> dict | None: ...
    def save_last(self, state: dict) -> None: ...
    def save_best(self, state: dict[str, dict], epoch: int, score: float) -> None: ...
    def load_best(self) -> dict[str, dict]: ...


@dataclass
class Member:
    """One model to train: its task, settings, and where its progress is persisted."""

    task: nn.Module  # forward(rgb, ir, labels, targets=None) -> (logits, terms); trained_modules()
    cfg: FitConfig
    checkpointer: Checkpointer | None = None
    on_epoch: Callable[[dict], None] | None = None  # called with every epoch's record


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_score: float
    resumed_from: int = 0  # last epoch loaded from a checkpoint (0: fresh start)
    stopped_early: bool = False
    error: str | None = None  # the member diverged (its loss became NaN/inf): why; it is not usable


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    return int(np.random.SeedSequence([seed, epoch, sum(map(ord, stream))]).generate_state(1)[0])


def make_optimizer(task: nn.Module, cfg: FitConfig, steps_per_epoch: int, *, fused: bool = False):
    """AdamW (fused into one kernel per step on CUDA) with the warm-up + cosine schedule."""
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = max(1, round(cfg.warmup_fraction * total))
    schedule = functools.partial(warmup_cosine, warmup=warmup, total=total)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps to the peak, then cosine decay to 0 at the
    last step of the maximum number of epochs (early stopping may end training before)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _weighted(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[name] * value for name, value in terms.items())


def train_step(task: nn.Module, batch, optimizer, weights: dict[str, float], rt: Runtime, *,
               grad_clip: float = 0.0, targets=None,
               scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step on a batch already on the device; returns the weighted loss and the
    raw terms, still on the device (no host sync in bf16/fp32). ``targets``: the frozen teacher's
    outputs for this batch when they were computed once for several students; ``scaler``: this
    optimizer's fp16 loss scaler (made here when not given)."""
    rgb, ir, labels, _ = batch
    with rt.autocast():
        _, terms = task(rgb, ir, labels, targets)
    loss = _weighted(terms, weights)
    optimizer_step(loss, optimizer, scaler if scaler is not None else make_grad_scaler(rt),
                   optimizer.param_groups[0]["params"], grad_clip)
    return loss, terms


class RngStream:
    """A member's own random stream (dropout...): members trained in one pass draw exactly what
    each would draw alone, whatever the others draw."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.state: tuple | None = None

    def seed(self, seed: int) -> None:
        with self._saved():
            torch.manual_seed(seed)
            self.state = self._get()

    @contextlib.contextmanager
    def active(self):
        with self._saved():
            torch.set_rng_state(self.state[0])
            if self.cuda:
                torch.cuda.set_rng_state(self.state[1], self.device)
            yield
            self.state = self._get()

    def _get(self) -> tuple:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None

    @contextlib.contextmanager
    def _saved(self):
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            yield


class _Progress:
    """A member's training state across epochs: optimizer, schedule, early stopping, history."""

    def __init__(self, member: Member, rt: Runtime, steps_per_epoch: int) -> None:
        self.member, self.task, self.cfg = member, member.task, member.cfg
        self.train_task = _parallel(self.task, rt)
        self.optimizer, self.scheduler = make_optimizer(self.task, self.cfg, steps_per_epoch, fused=rt.cuda)
        self.scaler = make_grad_scaler(rt)  # one per optimizer: each student keeps its own fp16 scale
        self.stopper = EarlyStopping(self.cfg.patience)
        self.history: list[dict] = []
        self.next_epoch = 1
        self.best_state: dict | None = None
        self.rng = RngStream(rt.device)
        self.failed: str | None = None  # the loss became non-finite: this member stops, the others go on
        self._resume()
        self.resumed_from = self.next_epoch - 1

    def _resume(self) -> None:
        state = self.member.checkpointer.load_last() if self.member.checkpointer else None
        if state is None:
            return
        self.task.load_state_dict(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.scaler, state.get("scaler"))
        self.stopper.load_state_dict(state["early_stopping"])
        self.history, self.next_epoch = state["history"], state["epoch"] + 1
        log.info("[%s] resuming after epoch %d (best %.4f at epoch %d)", self.cfg.label, state["epoch"],
                 self.stopper.best_score, self.stopper.best_epoch)

    @property
    def done(self) -> bool:
        return self.failed is not None or self.stopper.should_stop or self.next_epoch > self.cfg.epochs

    def check_finite(self, value: float, epoch: int, step: int) -> None:
        if self.failed is None and not math.isfinite(value):
            self.failed = (f"{self.cfg.label} training, epoch {epoch}, step {step}: the loss became {value}; "
                           "lower the learning rate or check the data")

    def start_epoch(self, epoch: int) -> dict:
        self.rng.seed(epoch_seed(self.cfg.seed, epoch, self.cfg.kind) + distributed.info().rank)
        self.task.train()
        return {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}

    def end_epoch(self, record: dict) -> None:
        record["improved"] = self.stopper.step(record["val_f1_macro"], record["epoch"])
        self.history.append(record)
        _log_epoch(self.cfg, record)
        if self.member.on_epoch is not None:
            self.member.on_epoch(record)
        ckpt = self.member.checkpointer
        if record["improved"]:
            self.best_state = {name: copy.deepcopy(m.state_dict())
                               for name, m in self.task.trained_modules().items()}
            if ckpt:
                ckpt.save_best(self.best_state, record["epoch"], self.stopper.best_score)
        self.next_epoch = record["epoch"] + 1
        if ckpt and (record["epoch"] % self.cfg.save_every == 0 or self.done):
            ckpt.save_last({"epoch": record["epoch"], "task": self.task.state_dict(),
                            "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                            "early_stopping": self.stopper.state_dict(), "history": self.history})

    def result(self) -> FitResult:
        """Restore the best weights (from the checkpointer after a resume) and report."""
        best = self.best_state
        if best is None and self.member.checkpointer is not None and self.history:
            best = self.member.checkpointer.load_best()
        for name, module in self.task.trained_modules().items():
            if best and name in best:
                module.load_state_dict(best[name])
        return FitResult(self.history, self.stopper.best_epoch, self.stopper.best_score,
                         resumed_from=self.resumed_from,
                         stopped_early=self.stopper.should_stop and len(self.history) < self.cfg.epochs,
                         error=self.failed)


def fit(task: nn.Module, train_loader, val_loader, cfg: FitConfig, rt: Runtime,
        checkpointer: Checkpointer | None = None, data_epoch: Callable[[int], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train one task: ``fit_many`` with a single member."""
    return fit_many([Member(task, cfg, checkpointer, on_epoch)], train_loader, val_loader, rt, data_epoch)[0]


def fit_many(members: list[Member], train_loader, val_loader, rt: Runtime,
             data_epoch: Callable[[int], None] | None = None) -> list[FitResult]:
    """Train every member in one pass per epoch until each has early-stopped or run its epochs;
    restore each one's best weights. Members share the seed, so they share the batches. A member
    whose loss becomes non-finite stops (its result carries the error) while the others go on; when
    every member has failed, the first one's error is raised.

    ``data_epoch(k)`` sets the data pipeline to epoch k (shuffle order, augmentation) before the
    epoch's pass: the data of epoch k is then the same whether the run was resumed or not, with
    any number of workers (`firekd.recipes.context.Loaders.start_epoch`).
    """
    if len({m.cfg.seed for m in members}) > 1:
        raise ValueError("members trained together share one seed (and so their batches)")
    progress = [_Progress(m, rt, len(train_loader)) for m in members]
    teacher_val: dict = {}  # the frozen teacher's validation outputs: computed in epoch 1, then reused
    while not all(p.done for p in progress):
        epoch = min(p.next_epoch for p in progress if not p.done)
        active = [p for p in progress if not p.done and p.next_epoch == epoch]
        t0 = time.perf_counter()
        if data_epoch is not None:
            data_epoch(epoch)
        records = [p.start_epoch(epoch) for p in active]
        with _out_of_memory(active, epoch, getattr(train_loader, "batch_size", None)):
            train = train_epoch(active, train_loader, rt, epoch)
            kept = [k for k, p in enumerate(active) if not p.failed]  # a diverged member stops here
            for p in active:
                if p.failed and kept:
                    log.warning("%s; the other members of the group go on", p.failed)
            active, records, train = ([seq[k] for k in kept] for seq in (active, records, train))
            val = validate([p.task for p in active], [p.cfg for p in active], val_loader, rt,
                           teacher_cache=teacher_val) if active else []
        seconds = round(time.perf_counter() - t0, 3)  # one pass: the same wall time for every member
        for p, record, t, v in zip(active, records, train, val, strict=True):
            p.end_epoch({**record, **t, **v, "time_s": seconds})
    if all(p.failed for p in progress):
        raise TrainingError(progress[0].failed)
    return [p.result() for p in progress]


@contextlib.contextmanager
def _out_of_memory(active: list[_Progress], epoch: int, batch_size: int | None):
    """A CUDA out-of-memory error ends in one line naming the stage, epoch and batch size."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        labels = ", ".join(p.cfg.label for p in active)
        half = max(1, (batch_size or 2) // 2)
        raise TrainingError(f"{labels}, epoch {epoch}: out of GPU memory at --batch_size {batch_size}; "
                            f"rerun with --batch_size {half} (finished seeds are kept)") from None


def teacher_targets(tasks: list[nn.Module], rgb: torch.Tensor, ir: torch.Tensor) -> dict[int, tuple]:
    """The frozen teachers' outputs for a batch, once per distinct teacher: {id(teacher): outputs}."""
    out: dict[int, tuple] = {}
    for task in tasks:
        teacher = getattr(task, "teacher", None)
        if teacher is not None and id(teacher) not in out:
            out[id(teacher)] = task.teacher_targets(rgb, ir)
    return out


def _targets_for(task: nn.Module, shared: dict[int, tuple]):
    teacher = getattr(task, "teacher", None)
    return shared[id(teacher)] if teacher is not None else None


def train_epoch(active: list[_Progress], loader, rt: Runtime, epoch: int) -> list[dict[str, float]]:
    """One pass over ``loader``; every active member takes a step on every batch. Returns each
    member's mean loss and raw terms."""
    sums: list[dict[str, torch.Tensor]] = [{} for _ in active]
    totals = [torch.zeros((), device=rt.device) for _ in active]
    steps = 0
    label = active[0].cfg.label if len(active) == 1 else f"{len(active)} {active[0].cfg.kind}s"
    bar = tqdm(loader, desc=f"{label} {epoch}/{max(p.cfg.epochs for p in active)}", leave=False,
               unit="batch", disable=None if distributed.info().is_main else True)
    for step, batch in enumerate(rt.batches(bar, train=True), 1):
        with rt.autocast():
            shared = teacher_targets([p.task for p in active], batch[0], batch[1])
        for k, p in enumerate(active):
            if p.failed:
                continue
            with p.rng.active():
                loss, terms = train_step(p.train_task, batch, p.optimizer, p.cfg.weights, rt,
                                         grad_clip=p.cfg.grad_clip, targets=_targets_for(p.task, shared),
                                         scaler=p.scaler)
            p.scheduler.step()
            totals[k] += loss.detach()
            for name, value in terms.items():
                sums[k][name] = sums[k].get(name, 0) + value.detach()
        steps += 1
        if step % active[0].cfg.log_every == 0:  # the only host sync: progress and the NaN check
            running = [_across_ranks((t / steps).item()) for t in totals]
            for p, value in zip(active, running, strict=True):
                p.check_finite(value, epoch, step)
            bar.set_postfix(loss="/".join(f"{v:.4f}" for v in running))
    if steps == 0:
        raise TrainingError(f"{active[0].cfg.label} training: the train split yields no batches")
    out = []
    for p, total, terms in zip(active, totals, sums, strict=True):
        mean = _across_ranks((total / steps).item())
        p.check_finite(mean, epoch, steps)
        out.append({"train_loss": mean, **{f"train_{k}": (v / steps).item() for k, v in terms.items()}})
    return out


def _across_ranks(value: float) -> float:
    """Mean over DDP ranks, so a NaN on any rank stops every rank at the same step."""
    return float(np.mean(distributed.gather_arrays({"v": np.array([value])})["v"]))


@torch.no_grad()
def validate(tasks: list[nn.Module], cfgs: list[FitConfig], loader, rt: Runtime, *,
             teacher_cache: dict | None = None) -> list[dict[str, float]]:
    """Per task: weighted loss, raw terms and macro-F1 (per-label max-F1 thresholds) on validation,
    with fp32 logits (bf16 logits would tie in the threshold search): TF32 on CUDA. One pass feeds
    every task.

    ``teacher_cache``: the frozen teachers' outputs per validation batch, filled by the first call
    and read by the next ones (the validation batches and a frozen teacher's outputs are the same
    every epoch): the teacher runs once per stage, not once per epoch.
    """
    for task in tasks:
        task.eval()
    acc = [_ValAccumulator() for _ in tasks]
    with rt.eval_numerics():
        for step, (rgb, ir, labels, index) in enumerate(rt.batches(loader)):
            shared = _cached_targets(teacher_cache, step, tasks, rgb, ir)
            for task, cfg, a in zip(tasks, cfgs, acc, strict=True):
                logits, terms = task(rgb, ir, labels, _targets_for(task, shared))
                a.add(logits, terms, cfg.weights, labels, index)
    return [a.result() for a in acc]


def _cached_targets(cache: dict | None, step: int, tasks: list[nn.Module], rgb: torch.Tensor,
                    ir: torch.Tensor) -> dict[int, tuple]:
    """``teacher_targets`` of validation batch ``step``, from ``cache`` when it holds them."""
    if cache is None:
        return teacher_targets(tasks, rgb, ir)
    stored = cache.setdefault(step, {})
    missing = [t for t in tasks if getattr(t, "teacher", None) is not None and id(t.teacher) not in stored]
    stored.update(teacher_targets(missing, rgb, ir))
    return stored


class _ValAccumulator:
    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.total, self.n = 0.0, 0
        self.probs, self.labels, self.index = [], [], []

    def add(self, logits, terms, weights, labels, index) -> None:
        self.total = self.total + _weighted(terms, weights) * len(labels)
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value * len(labels)
        self.n += len(labels)
        self.probs.append(torch.sigmoid(logits.float()))
        self.labels.append(labels)
        self.index.append(index)

    def result(self) -> dict[str, float]:
        totals = distributed.gather_arrays({"loss": np.array([float(self.total)]), "n": np.array([self.n]),
                                            **{k: np.array([v.item()]) for k, v in self.sums.items()}})
        samples = distributed.unique_by_index(distributed.gather_arrays({
            "probs": torch.cat(self.probs).cpu().numpy(), "labels": torch.cat(self.labels).cpu().numpy(),
            "index": torch.cat(self.index).cpu().numpy()}))  # the whole split, whatever the ranks
        y_score, y_true = samples["probs"], samples["labels"]
        scores = classification_scores(y_true, y_score, thresholds=best_thresholds(y_true, y_score))
        n = totals["n"].sum()
        out = {"val_loss": float(totals["loss"].sum() / n)}
        out.update({f"val_{k}": float(totals[k].sum() / n) for k in self.sums})
        out.update({f"val_{k}": scores[k] for k in ("f1_macro", "f1_fire", "f1_smoke")})
        return out


def _parallel(task: nn.Module, rt: Runtime) -> nn.Module:
    """The task wrapped in DistributedDataParallel under torchrun; the task itself otherwise. A
    distiller's frozen teacher is not a submodule of the task, so only the student and projector
    are synchronised."""
    if not distributed.info().enabled:
        return task
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(task, device_ids=[rt.device.index] if rt.cuda else None)


def _log_epoch(cfg: FitConfig, r: dict) -> None:
    terms = " ".join(f"{k[6:]}={v:.4f}" for k, v in r.items() if k.startswith("train_") and k != "train_loss")
    log.info("[%s] epoch %d/%d  loss %.4f (%s)  val_loss %.4f  val_f1 %.4f (fire %.3f, smoke %.3f)"
             "  lr %.2e  %.1fs%s", cfg.label, r["epoch"], cfg.epochs, r["train_loss"], terms,
             r["val_loss"], r["val_f1_macro"], r["val_f1_fire"], r["val_f1_smoke"], r["lr"],
             r["time_s"], "  *best" if r["improved"] else "")


@dataclass
class Predictions:
    probs: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N, 2)
    embeddings: np.ndarray  # (N, D)
    index: np.ndarray  # (N,) positions in the dataset


@torch.no_grad()
def predict(model: nn.Module, loader, rt: Runtime) -> Predictions:
    """Probabilities, labels and embeddings of a split, with fp32 logits (TF32 matmuls on CUDA) so
    that GPU and CPU metrics of the same model agree (bf16 logits tie in the threshold search and
    in AUROC/AP)."""
    model.eval()
    out: dict[str, list] = {"probs": [], "labels": [], "embeddings": [], "index": []}
    with rt.eval_numerics():
        for rgb, ir, labels, index in rt.batches(loader):  # outputs kept on the device: one copy
            # to the host per array at the end
            logits, embedding = model_outputs(model, rgb, ir)
            out["probs"].append(torch.sigmoid(logits.float()))
            out["labels"].append(labels)
            out["embeddings"].append(embedding.float())
            out["index"].append(index)  # on the host already (Runtime.to_device leaves it there)
    arrays = distributed.gather_arrays({k: torch.cat(v).cpu().numpy() for k, v in out.items()})
    return Predictions(**distributed.unique_by_index(arrays))
