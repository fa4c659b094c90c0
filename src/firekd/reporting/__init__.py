"""Figures and tables. Functions return matplotlib figures / DataFrames; recipes save them."""
