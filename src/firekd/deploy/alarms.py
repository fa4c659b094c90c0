"""Temporal alarm rule over per-frame decisions: k of the last n frames above the threshold raise an
alarm, which holds until at most ``release`` of the last n frames are above it (hysteresis).

One noisy frame (a glint, a red jacket) therefore raises nothing under the default rule (3 of 5),
and an alarm does not flicker off on one missed frame inside a fire. Pure functions on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firekd.errors import ConfigError


@dataclass(frozen=True)
class AlarmRule:
    k: int = 3  # frames above threshold, among the last n, that raise the alarm
    n: int = 5  # window length in (kept) frames
    release: int = 0  # the alarm ends when at most this many of the last n frames are above

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"--alarm_k must be between 1 and --alarm_n ({self.n}), got {self.k}")
        if not 0 <= self.release < self.k:
            raise ConfigError(f"--alarm_release must be between 0 and --alarm_k - 1 ({self.k - 1}), "
                              f"got {self.release}")


def window_counts(above: np.ndarray, n: int) -> np.ndarray:
    """(T,) number of True values among the last ``n`` frames ending at each frame (fewer at the start)."""
    csum = np.concatenate([[0], np.cumsum(np.asarray(above, dtype=np.int64))])  # (T+1,)
    t = np.arange(1, len(csum))
    return csum[t] - csum[np.maximum(t - n, 0)]


def alarm_states(above: np.ndarray, rule: AlarmRule) -> np.ndarray:
    """(T,) bool: the alarm state after each frame under ``rule``."""
    counts = window_counts(above, rule.n)
    state, out = False, np.zeros(len(counts), dtype=bool)
    for t, c in enumerate(counts):  # a two-state machine: on at >= k, off at <= release
        state = c >= rule.k if not state else c > rule.release
        out[t] = state
    return out


@dataclass(frozen=True)
class AlarmEvent:
    label: str
    start: int  # first frame in alarm (position in the kept frames)
    end: int  # last frame in alarm
    onset: int  # first above-threshold frame of the window that raised it
    peak: int  # frame of the highest probability within [onset, end]
    peak_prob: float


def alarm_events(probs: np.ndarray, threshold: float, rule: AlarmRule, label: str) -> list[AlarmEvent]:
    """The alarms of one label's probability series (T,) at ``threshold``."""
    probs = np.asarray(probs, dtype=float)
    above = probs >= threshold
    states = alarm_states(above, rule)
    edges = np.diff(np.concatenate([[0], states.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1
    events = []
    for start, end in zip(starts, ends, strict=True):
        window = np.nonzero(above[max(0, start - rule.n + 1):start + 1])[0]
        onset = int(max(0, start - rule.n + 1) + window[0])
        peak = int(onset + np.argmax(probs[onset:end + 1]))
        events.append(AlarmEvent(label, int(start), int(end), onset, peak, float(probs[peak])))
    return events
