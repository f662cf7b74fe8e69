"""Channel-agnostic use cases: one implementation each of validate, verify, find, LinkedIn and
prospects, called by the wallet-paid routes (/api/x402/v1), the keyed routes (/api/v1) and jobs.

A use case takes :class:`~server.services.Services` and a request model and returns a response
model, raising :class:`~server.errors.ApiError` (400 for the request's fault, 5xx for an
upstream's: never charged on either channel).
"""
