"""What the email finder learns: confirmed addresses per domain and the patterns they imply."""
