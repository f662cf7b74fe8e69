"""Multi-step outreach campaigns on the mail platform (issue 14)."""
