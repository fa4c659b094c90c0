#!/usr/bin/env python
"""Swin Transformer Tiny teacher (RGB+IR), student distilled with
Variant 2: KL + Contrastive + L2 + BCE (0.4, 0.2, 0.2, 0.2).

The spec's command; same as
`firekd train --teacher swin_tiny --variant kl_contrastive_l2_bce`. Every flag of the
spec is accepted with its default; see --help.
"""

import sys

from firekd.cli import spec_script

if __name__ == "__main__":
    sys.exit(spec_script("swin_tiny", "kl_contrastive_l2_bce"))
