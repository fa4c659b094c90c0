"""The epoch loop shared by teacher training, distillation and post-pruning fine-tuning.

A task maps a batch to ``(logits, {term: raw})``; the loop applies the weights (the only place
they are applied), logs every raw term, early-stops on validation macro-F1 (at per-label
max-F1 thresholds) and keeps the best weights. The loop does no file I/O: a ``Checkpointer``
given by the recipe persists state, so a killed run resumes from its last completed epoch.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from firekd.engine import distributed
from firekd.engine.early_stopping import EarlyStopping
from firekd.engine.runtime import Runtime
from firekd.errors import TrainingError
from firekd.kd.distiller import model_outputs
from firekd.metrics.classification import best_thresholds, classification_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    stage: str  # "teacher", "student", "finetune": names the stage in logs and errors
    epochs: int
    lr: float
    weight_decay: float
    patience: int
    weights: dict[str, float]
    seed: int
    grad_clip: float = 10.0
    log_every: int = 20
    warmup_fraction: float = 0.1


class Checkpointer(Protocol):
    def load_last(self) -> dict | None: ...
    def save_last(self, state: dict) -> None: ...
    def save_best(self, model_state: dict, epoch: int, score: float) -> None: ...
    def load_best(self) -> dict: ...


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_score: float
    resumed_from: int = 0  # last epoch loaded from a checkpoint (0: fresh start)
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def epoch_seed(seed: int, epoch: int, stage: str) -> int:
    return int(np.random.SeedSequence([seed, epoch, sum(map(ord, stage))]).generate_state(1)[0])


def make_optimizer(task: nn.Module, cfg: FitConfig, steps_per_epoch: int):
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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
               grad_clip: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step on a batch already on the device; returns the weighted loss and the
    raw terms, still on the device (no host sync)."""
    rgb, ir, labels, _ = batch
    with rt.autocast():
        _, terms = task(rgb, ir, labels)
    loss = _weighted(terms, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], grad_clip)
    optimizer.step()
    return loss, terms


def train_epoch(task: nn.Module, loader, optimizer, scheduler, cfg: FitConfig, rt: Runtime,
                epoch: int) -> dict[str, float]:
    task.train()
    sums: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=rt.device)
    steps = 0
    bar = tqdm(loader, desc=f"{cfg.stage} {epoch}/{cfg.epochs}", leave=False, unit="batch",
               disable=None if distributed.info().is_main else True)
    for step, batch in enumerate(bar, 1):
        loss, terms = train_step(task, rt.to_device(batch, train=True), optimizer, cfg.weights, rt,
                                 grad_clip=cfg.grad_clip)
        scheduler.step()
        total += loss.detach()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0) + value.detach()
        steps += 1
        if step % cfg.log_every == 0:  # the only host sync: progress and the NaN check
            running = _across_ranks((total / steps).item())
            _check_finite(running, cfg, epoch, step)
            bar.set_postfix(loss=f"{running:.4f}")
    if steps == 0:
        raise TrainingError(f"{cfg.stage} training: the train split yields no batches")
    mean = (total / steps).item()
    _check_finite(_across_ranks(mean), cfg, epoch, steps)
    out = {"train_loss": mean}
    out.update({f"train_{k}": (v / steps).item() for k, v in sums.items()})
    return out


def _across_ranks(value: float) -> float:
    """Mean over DDP ranks, so a NaN on any rank stops every rank at the same step."""
    return float(np.mean(distributed.gather_arrays({"v": np.array([value])})["v"]))


def _check_finite(value: float, cfg: FitConfig, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise TrainingError(
            f"{cfg.stage} training, epoch {epoch}, step {step}: the loss became {value}; "
            "lower the learning rate or check the data")


@torch.no_grad()
def validate(task: nn.Module, loader, cfg: FitConfig, rt: Runtime) -> dict[str, float]:
    """Weighted loss, raw terms and macro-F1 (per-label max-F1 thresholds) on validation."""
    task.eval()
    sums: dict[str, torch.Tensor] = {}
    total, n = torch.zeros((), device=rt.device), 0
    probs, labels_all = [], []
    index_all = []
    for batch in loader:
        rgb, ir, labels, index = rt.to_device(batch)
        with rt.autocast():
            logits, terms = task(rgb, ir, labels)
        total += _weighted(terms, cfg.weights) * len(labels)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0) + value * len(labels)
        n += len(labels)
        probs.append(torch.sigmoid(logits.float()))
        labels_all.append(labels)
        index_all.append(index)
    totals = distributed.gather_arrays({"loss": np.array([total.item()]), "n": np.array([n]),
                                        **{k: np.array([v.item()]) for k, v in sums.items()}})
    samples = distributed.unique_by_index(distributed.gather_arrays({
        "probs": torch.cat(probs).cpu().numpy(), "labels": torch.cat(labels_all).cpu().numpy(),
        "index": torch.cat(index_all).cpu().numpy()}))  # the whole split, whatever the ranks
    y_score, y_true = samples["probs"], samples["labels"]
    scores = classification_scores(y_true, y_score, thresholds=best_thresholds(y_true, y_score))
    n = totals["n"].sum()
    out = {"val_loss": float(totals["loss"].sum() / n)}
    out.update({f"val_{k}": float(totals[k].sum() / n) for k in sums})
    out.update({f"val_{k}": scores[k] for k in ("f1_macro", "f1_fire", "f1_smoke")})
    return out


def fit(task: nn.Module, model: nn.Module, train_loader, val_loader, cfg: FitConfig, rt: Runtime,
        checkpointer: Checkpointer | None = None, generator: torch.Generator | None = None,
        on_epoch=None) -> FitResult:
    """Train ``task`` (whose trainable model is ``model``), early-stop, restore the best weights.

    ``generator`` is the train loader's shuffle generator: it is reseeded every epoch, so the data
    order of epoch k is the same whether the run was resumed or not. ``on_epoch(record)`` is called
    after every epoch (e.g. TensorBoard).
    """
    optimizer, scheduler = make_optimizer(task, cfg, len(train_loader))
    train_task = _parallel(task, rt)
    stopper = EarlyStopping(cfg.patience)
    history: list[dict] = []
    start = 1
    state = checkpointer.load_last() if checkpointer else None
    if state is not None:
        task.load_state_dict(state["task"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        history = state["history"]
        start = state["epoch"] + 1
        log.info("[%s] resuming after epoch %d (best %.4f at epoch %d)", cfg.stage, state["epoch"],
                 stopper.best_score, stopper.best_epoch)
    best_state = None
    for epoch in range(start, cfg.epochs + 1):
        if stopper.should_stop:
            break
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.seed, epoch, cfg.stage) + distributed.info().rank)
        if generator is not None:
            generator.manual_seed(epoch_seed(cfg.seed, epoch, "shuffle"))
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler: reshuffle per epoch
            train_loader.sampler.set_epoch(epoch)
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        record.update(train_epoch(train_task, train_loader, optimizer, scheduler, cfg, rt, epoch))
        record.update(validate(task, val_loader, cfg, rt))
        record["improved"] = stopper.step(record["val_f1_macro"], epoch)
        record["time_s"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        _log_epoch(cfg, record)
        if on_epoch is not None:
            on_epoch(record)
        if record["improved"]:
            best_state = copy.deepcopy(model.state_dict())
            if checkpointer:
                checkpointer.save_best(best_state, epoch, stopper.best_score)
        if checkpointer:
            checkpointer.save_last({"epoch": epoch, "task": _trainable_state(task),
                                    "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(),
                                    "early_stopping": stopper.state_dict(), "history": history})
    if best_state is None and checkpointer is not None:
        best_state = checkpointer.load_best()
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(history, stopper.best_epoch, stopper.best_score, resumed_from=start - 1,
                     stopped_early=stopper.should_stop and len(history) < cfg.epochs)


def _parallel(task: nn.Module, rt: Runtime) -> nn.Module:
    """The task wrapped in DistributedDataParallel under torchrun; the task itself otherwise.
    Frozen parameters (a distiller's teacher) are not synchronised: they need no gradients."""
    if not distributed.info().enabled:
        return task
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(task, device_ids=[rt.device.index] if rt.cuda else None)


def _trainable_state(task: nn.Module) -> dict:
    """The task's state without a distiller's frozen teacher (stored once, elsewhere)."""
    return {k: v for k, v in task.state_dict().items() if not k.startswith("teacher.")}


def _log_epoch(cfg: FitConfig, r: dict) -> None:
    terms = " ".join(f"{k[6:]}={v:.4f}" for k, v in r.items() if k.startswith("train_") and k != "train_loss")
    log.info("[%s] epoch %d/%d  loss %.4f (%s)  val_loss %.4f  val_f1 %.4f (fire %.3f, smoke %.3f)"
             "  lr %.2e  %.1fs%s", cfg.stage, r["epoch"], cfg.epochs, r["train_loss"], terms,
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
    model.eval()
    out: dict[str, list] = {"probs": [], "labels": [], "embeddings": [], "index": []}
    for batch in loader:
        rgb, ir, labels, index = rt.to_device(batch)
        with rt.autocast():
            logits, embedding = model_outputs(model, rgb, ir)
        out["probs"].append(torch.sigmoid(logits.float()).cpu())
        out["labels"].append(labels.cpu())
        out["embeddings"].append(embedding.float().cpu())
        out["index"].append(index.cpu())
    arrays = distributed.gather_arrays({k: torch.cat(v).numpy() for k, v in out.items()})
    return Predictions(**distributed.unique_by_index(arrays))
