"""Sender profiles: who campaigns write as (free-form ``sender_data``), at most five per user, one
default, and named prompts per profile."""
