"""Money and credits: the one pricing table, the credit ledger rules and its store."""
