"""Customer webhooks: subscriptions, Standard Webhooks signatures, durable deliveries with
retries and back-off, auto-disable of dead endpoints, and no delivery to private addresses.

- :mod:`.signing` (pure): ``whsec_`` secrets, ``webhook-id``/``-timestamp``/``-signature``
  headers, verification with a replay window (what a receiver runs; tests use it too).
- :mod:`.rules` (pure): the delivery state table, the retry schedule, endpoint health.
- :mod:`.destination` (pure + one resolver call): which URLs and addresses may receive.
- :mod:`.store`: endpoints and deliveries in the database; :func:`.store.WebhookStore.emit`
  is how the rest of the server raises an event.
- :mod:`.dispatch`: the loop that claims due deliveries and POSTs them.
"""
