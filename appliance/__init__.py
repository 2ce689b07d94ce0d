"""Triage appliance: the edge service that sits next to a hospital's PACS."""

#: The one place the version is set: pyproject.toml reads it, ``appliance --version`` prints it,
#: every result object carries it in SoftwareVersions and ``/metrics`` in appliance_build_info.
__version__ = "0.3.0"
