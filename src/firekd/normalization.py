"""Input normalisation shared by the data transforms (which apply it) and the models (whose
pretrained backbones expect it)."""

RGB_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: the teachers' backbones expect them
RGB_STD = (0.229, 0.224, 0.225)
IR_MEAN = 0.5  # IR is already scaled to [0, 1] by the decoder
IR_STD = 0.25
