"""The keyed API's HTTP contract: pagination, idempotency, the guard pipeline around handlers."""
