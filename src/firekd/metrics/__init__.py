"""Metrics: classification, efficiency, statistics."""
