"""BaviMail: our own mail platform (sending domains, the outbox, delivery through the relay)."""
