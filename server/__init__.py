"""server: the Starlette app composing emailintel and x402gw."""
