"""Datasets: uploaded or generated tables of leads, their rows, and the columns our jobs add."""
