"""Loopback test labs built from real servers (NSD, ...); every socket is on 127.0.0.0/8."""
