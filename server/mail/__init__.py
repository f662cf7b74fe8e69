"""BaviMail, our own mail platform: sending domains (DKIM/SPF/DMARC records and their checks),
aliases and the sending identity, the outbox and delivery through the relay, inbound mail."""
