#!/usr/bin/env python
"""ResNet-152 teacher (RGB+IR), student distilled with Variant 1: KL + L2 + BCE (0.5, 0.2, 0.3).

The spec's command; same as `firekd train --teacher resnet152 --variant kl_l2_bce`. Every flag of the
spec is accepted with its default; see --help.
"""

import sys

from firekd.cli import spec_script

if __name__ == "__main__":
    sys.exit(spec_script("resnet152", "kl_l2_bce"))
