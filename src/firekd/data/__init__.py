"""Data layer: CSV records, splits, image decoding, paired dataset, synthetic data."""
