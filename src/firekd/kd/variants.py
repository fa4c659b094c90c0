"""The loss variants of the ablation: which raw terms a distiller computes and their weights.

Names and weights are the spec's; `bce` is the control (the student alone, no teacher).
"""

from __future__ import annotations

from firekd.errors import ConfigError

VARIANTS: dict[str, dict[str, float]] = {
    "kl_bce": {"kl": 0.7, "bce": 0.3},
    "kl_l2_bce": {"kl": 0.5, "l2": 0.2, "bce": 0.3},
    "kl_contrastive_l2_bce": {"kl": 0.4, "contrastive": 0.2, "l2": 0.2, "bce": 0.2},
    "bce": {"bce": 1.0},
}
KD_VARIANTS = ("kl_bce", "kl_l2_bce", "kl_contrastive_l2_bce")
CONTROL = "bce"


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown loss variant '{variant}'; known: {', '.join(VARIANTS)}")
    return variant


def variant_weights(variant: str, override: dict[str, float] | None = None) -> dict[str, float]:
    """The spec's weights of ``variant``; ``override`` (--loss_weights) replaces the weights of
    the terms this variant has."""
    weights = dict(VARIANTS[check_variant(variant)])
    weights.update({t: w for t, w in (override or {}).items() if t in weights})
    return weights


def check_loss_weights(variants: list[str], override: dict[str, float]) -> None:
    """Every overridden term must belong to at least one selected variant."""
    known = {t for v in variants for t in VARIANTS[check_variant(v)]}
    for term in override:
        if term not in known:
            raise ConfigError(f"--loss_weights: no selected variant has the term '{term}' "
                              f"(terms: {', '.join(sorted(known))})")


def uses_teacher(variant: str) -> bool:
    return variant != CONTROL


def parse_loss_weights(items: list[str] | None) -> dict[str, float]:
    """'kl=0.6 bce=0.4' -> {'kl': 0.6, 'bce': 0.4}."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or out[name.strip()] < 0:
            raise ConfigError(f"--loss_weights: expected TERM=WEIGHT with WEIGHT >= 0, got '{item}'")
    return out


def split_run_name(name: str) -> tuple[str, str]:
    """'efficientnet_b7_kl_l2_bce' -> ('efficientnet_b7', 'kl_l2_bce'): the longest variant suffix."""
    for variant in sorted(VARIANTS, key=len, reverse=True):
        if name.endswith(f"_{variant}"):
            return name[: -len(variant) - 1], variant
    return name, ""
