"""Pruning a student: structured (channels removed, Torch-Pruning) or unstructured (weights zeroed).

``sparsity`` is the fraction of the student's parameters removed:
- structured: whole channels go, with everything that depends on them (the BatchNorm, the next
  layer's inputs), until the parameter count has dropped by at least ``sparsity``. The same
  fraction of channels goes in every layer; it jumps to a safe guess, then grows in small steps.
  Channel counts stay multiples of 8 when that overshoots the fraction by at most 2 points,
  otherwise they are exact (overshoot below one point). The output layer keeps its outputs, and
  with them its inputs (the embedding).
- unstructured: global L1 magnitude over the weights of every convolution and linear layer: exactly
  ``round(sparsity * n)`` of those ``n`` weights are zeroed (BatchNorm and biases are left alone).
  The tensors keep their shapes: no speed-up on dense kernels, only sparsity for a sparse runtime.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from firekd.compress import PRUNE_METHODS
from firekd.errors import ConfigError, ModelError
from firekd.metrics.efficiency import cpu_threads, parameter_count

MAX_CHANNEL_RATIO = 0.95  # never remove more than this fraction of a layer's channels
RATIO_STEP = 0.005  # channel fraction increment once past the first guess
ROUND_TO = 8  # channel counts in multiples of 8 suit the CPU's vector kernels
ROUNDING_SLACK = 0.02  # most overshoot of the requested fraction accepted to keep those multiples


@dataclass(frozen=True)
class PruneReport:
    method: str
    requested: float  # fraction of parameters to remove
    achieved: float  # structured: fraction of parameters removed; unstructured: of prunable weights zeroed
    params_before: int
    params_after: int  # structured: parameters left; unstructured: non-zero parameters left

    def to_dict(self) -> dict:
        return asdict(self)


def check_sparsity(sparsity: float) -> float:
    if not 0 < sparsity < 1:
        raise ConfigError(f"--prune_sparsity must be strictly between 0 and 1, got {sparsity}")
    return sparsity


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The layers producing the logits: linear layers with ``num_classes`` outputs."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.Linear) and m.out_features == model.num_classes]
    if not layers:
        raise ModelError(f"{type(model).__name__}: no output layer with {model.num_classes} outputs found")
    return layers


def _scalar(outputs) -> torch.Tensor:
    """Torch-Pruning traces the graph backwards from one tensor: the logits and the embedding."""
    return sum(out.float().sum() for out in outputs) if isinstance(outputs, tuple) else outputs.sum()


def prune_structured(model: nn.Module, sparsity: float,
                     example: torch.Tensor) -> tuple[nn.Module, PruneReport]:
    """A copy of ``model`` without the channels (L2 magnitude, the same fraction in every layer)
    whose removal takes away at least ``sparsity`` of its parameters; ``example`` is an input
    batch. Channel counts are kept multiples of 8 unless that overshoots by more than
    ``ROUNDING_SLACK`` (small sparsities: every layer then crosses a multiple of 8 at once)."""
    check_sparsity(sparsity)
    before = parameter_count(model)
    pruned = _uniform_channel_pruning(copy.deepcopy(model), sparsity, example, ROUND_TO)
    if 1 - parameter_count(pruned) / before - sparsity > ROUNDING_SLACK:
        pruned = _uniform_channel_pruning(copy.deepcopy(model), sparsity, example, None)
    after = parameter_count(pruned)
    return pruned, PruneReport("structured", sparsity, 1 - after / before, before, after)


def _uniform_channel_pruning(model: nn.Module, sparsity: float, example: torch.Tensor,
                             round_to: int | None) -> nn.Module:
    import torch_pruning as tp

    before = parameter_count(model)
    target = before * (1 - sparsity)
    was_training = model.training
    model.eval()
    # Removing a fraction r of every layer's channels removes at most 1-(1-r)^2 of the parameters
    # (both dimensions of a weight shrink), so 0.8 of the r solving 1-(1-r)^2 = sparsity is a safe
    # first jump; the small steps after it are what costs time (importance is recomputed each step).
    start = 0.8 * (1 - (1 - sparsity) ** 0.5)
    steps = int((MAX_CHANNEL_RATIO - start) / RATIO_STEP) + 1
    # One thread: pruning is many tiny tensor ops, which threads only slow down (by 5-20x on a
    # busy machine, where they wait for each other).
    with cpu_threads(1):
        pruner = tp.pruner.BasePruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=MAX_CHANNEL_RATIO, iterative_steps=steps, round_to=round_to,
            iterative_pruning_ratio_scheduler=_schedule(start), ignored_layers=output_layers(model),
            output_transform=_scalar)
        for _ in range(steps):
            if parameter_count(model) <= target:
                break
            pruner.step()
    model.train(was_training)
    if parameter_count(model) > target:
        raise ConfigError(f"--prune_sparsity {sparsity}: structured pruning can remove at most "
                          f"{1 - parameter_count(model) / before:.1%} of this student's parameters")
    return model


def _schedule(start: float):
    """Torch-Pruning scheduler: channel fraction per step, jumping to ``start`` at the first."""
    def scheduler(max_ratio: float, steps: int) -> list[float]:
        return [0.0] + [min(max_ratio, start + k * RATIO_STEP) for k in range(steps)]
    return scheduler


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def prune_unstructured(model: nn.Module, sparsity: float) -> tuple[nn.Module, PruneReport]:
    """A copy of ``model`` with exactly ``round(sparsity * n)`` of its ``n`` conv/linear weights
    zeroed (global L1 magnitude). The masks stay attached (fine-tuning keeps the zeros);
    ``make_permanent`` removes them."""
    check_sparsity(sparsity)
    model = copy.deepcopy(model)
    before = parameter_count(model)
    targets = prunable_weights(model)
    total = sum(m.weight.numel() for m, _ in targets)
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured,
                                    amount=round(sparsity * total))
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    return model, PruneReport("unstructured", sparsity, zeros / total, before, before - zeros)


def make_permanent(model: nn.Module) -> None:
    """Fold pruning masks into the weights (weight = weight_orig * mask) and drop the masks."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")


def zero_fraction(model: nn.Module) -> float:
    """Fraction of the conv/linear weights that are exactly zero."""
    weights = [m.weight for m, _ in prunable_weights(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def prune_model(model: nn.Module, method: str, sparsity: float,
                example: torch.Tensor) -> tuple[nn.Module, PruneReport]:
    """A pruned copy of ``model`` and what was removed."""
    if method == "structured":
        return prune_structured(model, sparsity, example)
    if method == "unstructured":
        return prune_unstructured(model, sparsity)
    raise ConfigError(f"--prune_method must be one of {', '.join(PRUNE_METHODS)}, got '{method}'")
