"""HTTP handlers, one module per route group, plus the request-body parsing they share."""
