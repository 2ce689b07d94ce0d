"""Triage appliance: the edge service that sits next to a hospital's PACS."""

__version__ = "0.1.0"
