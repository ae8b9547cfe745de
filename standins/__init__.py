"""Loopback stand-ins of the services the relay talks to, and a harness that drives it (dev only)."""
