"""SMTP probing: reply classification, provider rules and one aiosmtplib session."""
