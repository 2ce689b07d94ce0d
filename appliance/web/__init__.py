"""The web pages, JSON API, health and metrics (FastAPI + Jinja2, server-rendered)."""
