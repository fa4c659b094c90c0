"""Class-activation maps (Grad-CAM, from the grad-cam package) of firekd models: where a student,
or the RGB+IR teacher it learnt from, looks when it scores a label.

The map is taken at the deepest convolutional stage with a map of at least 4x4 (the teacher's
stage after fusion), weighted by the gradient of the label's logit, and upsampled to the input size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from firekd import LABELS
from firekd.errors import ModelError


class _LogitsOf(nn.Module):
    """One input tensor -> the logits: grad-cam calls ``model(x)``. For an RGB+IR model the IR
    channels travel after the RGB ones and are split off here."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.two_inputs = getattr(model, "modalities", "rgb") == "rgb+ir"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_inputs:
            return self.model(x[:, :3], x[:, 3:])[0]
        return self.model(x)[0]


MIN_MAP = 4  # a stage whose map is smaller than 4x4 says little about where the model looks


def stage_layers(model: nn.Module) -> list[nn.Module]:
    """Convolutional stages whose output map Grad-CAM may weigh, deepest first. The teachers offer
    their stage after fusion only (earlier stages run RGB and IR as one doubled batch)."""
    from firekd.models.student import FireKDStudent, TimmStudent
    from firekd.models.teachers import EfficientNetTeacher, ResNetTeacher

    if isinstance(model, FireKDStudent):
        return list(model.blocks)[::-1]
    if isinstance(model, ResNetTeacher):
        return [model.backbone.layer4[-1]]  # its blocks are called one by one, not layer4 itself
    if isinstance(model, EfficientNetTeacher):
        return [model.backbone.bn2]
    if isinstance(model, TimmStudent) and getattr(model.backbone, "feature_info", None):
        return [model.backbone.get_submodule(f["module"]) for f in model.backbone.feature_info][::-1]
    raise ModelError(f"class-activation maps need a convolutional model (firekd_student, a timm CNN "
                     f"student, a ResNet or EfficientNet teacher), not {type(model).__name__}")


def target_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The deepest stage whose map on input ``x`` is at least MIN_MAP on a side (at 32 px a
    student's last stage is 1x1), else the stage with the largest map."""
    wrapper, layers = _LogitsOf(model), stage_layers(model)
    sizes: dict[int, int] = {}

    def record(k: int):
        def hook(module, inputs, out) -> None:  # returns None: the output is left as it is
            sizes[k] = min(out.shape[-2:])
        return hook

    hooks = [layer.register_forward_hook(record(k)) for k, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            wrapper(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    big = [k for k in range(len(layers)) if sizes.get(k, 0) >= MIN_MAP]
    return layers[big[0] if big else max(range(len(layers)), key=lambda k: sizes.get(k, 0))]


def class_activation_maps(model: nn.Module, rgb: torch.Tensor, ir: torch.Tensor | None,
                          label: str) -> np.ndarray:
    """(B,H,W) maps in [0, 1] for ``label`` on normalised inputs rgb (B,3,H,W) [and ir (B,C,H,W)]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    wrapper = _LogitsOf(model)
    x = (torch.cat([rgb, ir], dim=1) if wrapper.two_inputs else rgb).float()
    targets = [ClassifierOutputTarget(LABELS.index(label))] * len(x)
    layer = target_layer(model, x)
    with torch.enable_grad(), GradCAM(model=wrapper, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=targets)  # (B,H,W), each normalised to [0, 1]
    return np.asarray(maps, dtype=np.float32)
