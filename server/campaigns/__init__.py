"""Campaigns: multi-step outreach sequences sent through the mail platform's outbox."""
