"""Sync with the central hub: device identity, signed requests, report outbox, releases."""
