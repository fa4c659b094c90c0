"""Is the teacher worth distilling from? Its validation F1 against the no-teacher baseline's (the
``bce`` control, the student trained alone), checked before the students train when the control is
already trained, else as soon as it is. A teacher that is not better on validation makes every KD
student worse than the control in our measurements, so the run says so in one line, and the
report's answer repeats it."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)
ADVICE = ("try a pretrained teacher (--teacher_weights, or drop --no_pretrained) or more teacher steps "
          "(--steps_teacher, --epochs_teacher)")


def val_f1(train_log: dict | None) -> float | None:
    """The best validation F1 macro a training log records (None when it has none)."""
    value = (train_log or {}).get("best_val_f1_macro")
    return float(value) if value is not None and math.isfinite(value) else None


def weak_teacher(teacher_f1: float | None, control_f1: float | None) -> bool | None:
    """True when the teacher's validation F1 is not above the control's; None when either is unknown
    (an untrained teacher has no validation F1 of its own)."""
    if teacher_f1 is None or control_f1 is None:
        return None
    return teacher_f1 <= control_f1


def check_teacher(teacher: str, seed: int, teacher_log: dict | None, control_log: dict | None) -> bool | None:
    """Log one warning line when the teacher is not better than the control on validation."""
    t, c = val_f1(teacher_log), val_f1(control_log)
    weak = weak_teacher(t, c)
    if weak:
        log.warning("teacher %s seed %d: validation F1 macro %.4f is not above the bce control's %.4f (the "
                    "student alone): distilling from it is unlikely to beat the control; %s", teacher, seed,
                    t, c, ADVICE)
    elif weak is False:
        log.info("teacher %s seed %d: validation F1 macro %.4f, above the bce control's %.4f", teacher, seed,
                 t, c)
    return weak
