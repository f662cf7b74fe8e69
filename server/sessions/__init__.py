"""Processing sessions: sender data, a dataset of leads, and the enrichment job run over it."""
