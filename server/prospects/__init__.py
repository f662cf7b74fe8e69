"""The prospect pool: tag normalisation, import, and weighted-Jaccard search."""
