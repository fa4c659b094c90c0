#!/usr/bin/env python
"""Swin Transformer Tiny teacher (RGB+IR), student distilled with Baseline: KL + BCE (0.7, 0.3).

The spec's command; same as `firekd train --teacher swin_tiny --variant kl_bce`. Every flag of the
spec is accepted with its default; see --help.
"""

import sys

from firekd.cli import spec_script

if __name__ == "__main__":
    sys.exit(spec_script("swin_tiny", "kl_bce"))
