"""Benchmarks: our code side by side with the peers named in the issues, printed as ratios."""
