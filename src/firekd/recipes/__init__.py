"""Recipes: one per stage (data, train teacher, distil, compress, evaluate, ablation, report).

Recipes, the run-directory writer and the CLI are the only places that touch files or logs.
"""
