"""A real Orthanc (the Debian package) as the PACS in tests, with REST helpers.

Usage::

    appliance = ("TRIAGE", "127.0.0.1", port)
    with Orthanc(tmp_path / "orthanc", modalities={"appliance": appliance}) as pacs:
        env = {"APPLIANCE_DICOM_DESTINATIONS": pacs.destination}   # results go back here
        pacs.upload(path)                           # POST /instances
        pacs.store_study("appliance", study_uid)    # C-STORE the study to the appliance
        pacs.wait_for_instances(study_uid, 2)       # results came back
        pacs.find_instance(sop_instance_uid)        # {"ID", "MainDicomTags", ...} or None

Orthanc listens for DICOM on ``pacs.dicom_port`` as AE ``pacs.ae_title`` (all interfaces:
Orthanc 1.10 has no DICOM bind address) and for HTTP on ``pacs.url`` (loopback only,
no authentication). It runs in its own folder with TCP_NODELAY=1 in its environment
(DCMTK inside Orthanc reads it; without it loopback transfers crawl), logs to
``<folder>/orthanc.log`` and is stopped, with its folder left for post-mortems, on exit
(Orthanc takes about 3 s to shut down; share one instance between tests where you can).

Modalities given at start are known to Orthanc ("DicomModalities"): it accepts stores
from them and can send to them with :meth:`Orthanc.store`; :meth:`Orthanc.add_modality`
registers more while it runs. ``config`` overrides any Orthanc option (e.g.
``{"StableAge": 2}``, ``{"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"]}``).
"""

from __future__ import annotations

from scripts.harness import Orthanc  # noqa: F401  (one implementation, shared with the benchmarks)
