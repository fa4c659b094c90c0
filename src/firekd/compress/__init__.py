"""Compression for deployment: int8 quantization (torchao PT2E), pruning (structured with
Torch-Pruning, unstructured with torch.nn.utils.prune), ONNX export, and the artifacts' formats.

Pure components: they take models and tensors and return models and reports; the recipes
(``firekd.recipes.compress``, ``firekd.recipes.export``) evaluate, log and write the run folders.
Artifacts: ``student_quantized.pth`` (``compress.artifacts``), ``student_pruned.pth`` (a firekd
checkpoint with the pruned layers' sizes, ``compress.structure``), ``student.onnx`` and
``student_int8.onnx`` (``compress.onnx_export``).
"""

PRUNE_METHODS = ("structured", "unstructured")
