"""firekd: multimodal (RGB + IR) knowledge distillation for fire and smoke detection."""

__version__ = "0.1.0"

LABELS = ("fire", "smoke")
