"""BaviMail, our own mail platform: sending domains (DKIM/SPF/DMARC records and their checks),
aliases, and the sending identity the outbox signs with."""
