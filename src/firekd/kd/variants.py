"""The loss variants of the ablation: which raw terms a distiller computes and their weights.

Names and weights are the spec's; `bce` is the control (the student alone, no teacher).
`self_kd` is the no-teacher semi-supervised baseline: a fresh student distilled, with `kl_bce`'s
terms and weights, from its seed's `bce` control (labels only) on the labelled + unlabelled pairs.
Neither sees a teacher: each is trained once per seed and shown under every teacher.
"""

from __future__ import annotations

from firekd.errors import ConfigError

VARIANTS: dict[str, dict[str, float]] = {
    "kl_bce": {"kl": 0.7, "bce": 0.3},
    "kl_l2_bce": {"kl": 0.5, "l2": 0.2, "bce": 0.3},
    "kl_contrastive_l2_bce": {"kl": 0.4, "contrastive": 0.2, "l2": 0.2, "bce": 0.2},
    "bce": {"bce": 1.0},
    "self_kd": {"kl": 0.7, "bce": 0.3},  # kl_bce's, from the control instead of a teacher
}
KD_VARIANTS = ("kl_bce", "kl_l2_bce", "kl_contrastive_l2_bce")
CONTROL = "bce"
SELF_KD = "self_kd"
SPEC_VARIANTS = (*KD_VARIANTS, CONTROL)  # the spec's grid (--variants' default)
BASELINES = (CONTROL, SELF_KD)  # the no-teacher baselines: trained once per seed, shown under every teacher


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
    """Distils from the (multimodal or RGB) teacher of its run."""
    return variant not in BASELINES


def distills(variant: str) -> bool:
    """Learns from a frozen model (a teacher, or for ``self_kd`` the control) on the labelled +
    unlabelled pairs; only the ``bce`` control trains on labels alone."""
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
