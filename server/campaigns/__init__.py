"""Campaigns: multi-step outreach sent through BaviMail's outbox (issue 14)."""
