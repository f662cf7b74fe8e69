"""The suppression list: addresses and domains a user never mails (normalising, the store that
send paths ask in one query per batch, and the CSV import)."""
