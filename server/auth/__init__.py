"""Identity: API keys (format, checksum, keyed hash), session JWTs, scopes, plans, the key store."""
