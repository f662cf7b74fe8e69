"""x402gw: ASGI payment middleware and facilitator for x402 v1 and v2 (EIP-3009 on EVM)."""
