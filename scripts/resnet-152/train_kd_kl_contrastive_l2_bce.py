#!/usr/bin/env python
"""ResNet-152 teacher (RGB+IR), student distilled with
Variant 2: KL + Contrastive + L2 + BCE (0.4, 0.2, 0.2, 0.2).

The spec's command; same as
`firekd train --teacher resnet152 --variant kl_contrastive_l2_bce`. Every flag of the
spec is accepted with its default; see --help.
"""

import sys

from firekd.cli import spec_script

if __name__ == "__main__":
    sys.exit(spec_script("resnet152", "kl_contrastive_l2_bce"))
