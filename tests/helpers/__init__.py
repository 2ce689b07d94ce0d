"""Code the tests share; nothing here is a test.

A test imports shared code from here only, never from another test module or a
``conftest.py`` (``scripts/check-layers`` refuses that); fixtures stay in the conftests.

- :mod:`~tests.helpers.series`: synthetic DICOM datasets, files and head CTs.
- :mod:`~tests.helpers.dimse`: C-ECHO, C-STORE (pynetdicom, storescu), raw association requests.
- :mod:`~tests.helpers.sr`: reading an SR's content tree, dciodvfy, the report builders' inputs.
- :mod:`~tests.helpers.boxes`: the seeded appliance the web tests share, and signing in.
- :mod:`~tests.helpers.packages`: model packages built, derived and tampered with.
- :mod:`~tests.helpers.drift`: a simulated site for the drift monitor; drift tables filled by days.
- :mod:`~tests.helpers.hub`: the central hub as a process, box settings, valid reports.

Real processes, free ports and waits come from :mod:`scripts.harness`, shared with the benchmarks.
"""
