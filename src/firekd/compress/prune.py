"""Pruning a student: structured (channels removed, Torch-Pruning) or unstructured (weights zeroed).

``sparsity`` is the fraction of the student's parameters removed:
- structured: whole channels go, with everything that depends on them (the BatchNorm, the next
  layer's inputs), until the parameter count has dropped by at least ``sparsity``; the channel
  fraction grows in small steps, so the achieved fraction overshoots by at most about one percent.
  The output layer keeps its outputs, and with them its inputs (the embedding).
- unstructured: global L1 magnitude over the weights of every convolution and linear layer: exactly
  ``round(sparsity * n)`` of those ``n`` weights are zeroed (BatchNorm and biases are left alone).
  The tensors keep their shapes: no speed-up on dense kernels, only sparsity for a sparse runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from firekd.compress import PRUNE_METHODS
from firekd.errors import ConfigError, ModelError
from firekd.metrics.efficiency import parameter_count

MAX_CHANNEL_RATIO = 0.95  # never remove more than this fraction of a layer's channels
STEPS = 200  # channel fraction grows in MAX_CHANNEL_RATIO / STEPS increments
ROUND_TO = 8  # channel counts in multiples of 8 suit the CPU's vector kernels


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


def prune_structured(model: nn.Module, sparsity: float, example: torch.Tensor) -> PruneReport:
    """Remove channels of ``model`` in place (L2 magnitude importance, same fraction per layer)
    until at least ``sparsity`` of its parameters are gone; ``example`` is one input batch."""
    import torch_pruning as tp

    check_sparsity(sparsity)
    before = parameter_count(model)
    target = before * (1 - sparsity)
    was_training = model.training
    model.eval()
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=MAX_CHANNEL_RATIO, iterative_steps=STEPS, round_to=ROUND_TO,
        ignored_layers=output_layers(model), output_transform=_scalar)
    for _ in range(STEPS):
        if parameter_count(model) <= target:
            break
        pruner.step()
    model.train(was_training)
    after = parameter_count(model)
    if after > target:
        raise ConfigError(f"--prune_sparsity {sparsity}: structured pruning can remove at most "
                          f"{1 - after / before:.1%} of this student's parameters")
    return PruneReport("structured", sparsity, 1 - after / before, before, after)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def prune_unstructured(model: nn.Module, sparsity: float) -> PruneReport:
    """Zero exactly ``round(sparsity * n)`` of the ``n`` conv/linear weights of ``model`` (global
    L1 magnitude). The masks stay attached (fine-tuning keeps the zeros); ``make_permanent``
    removes them."""
    check_sparsity(sparsity)
    before = parameter_count(model)
    targets = prunable_weights(model)
    total = sum(m.weight.numel() for m, _ in targets)
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured,
                                    amount=round(sparsity * total))
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    return PruneReport("unstructured", sparsity, zeros / total, before, before - zeros)


def make_permanent(model: nn.Module) -> None:
    """Fold pruning masks into the weights (weight = weight_orig * mask) and drop the masks."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")


def zero_fraction(model: nn.Module) -> float:
    """Fraction of the conv/linear weights that are exactly zero."""
    weights = [m.weight for m, _ in prunable_weights(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def prune_model(model: nn.Module, method: str, sparsity: float, example: torch.Tensor) -> PruneReport:
    if method == "structured":
        return prune_structured(model, sparsity, example)
    if method == "unstructured":
        return prune_unstructured(model, sparsity)
    raise ConfigError(f"--prune_method must be one of {', '.join(PRUNE_METHODS)}, got '{method}'")
