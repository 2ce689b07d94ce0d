"""atheris target: the dataset walker (appliance.receive.validate) on any bytes, in every
uncompressed encoding and deflated. Allowed: a header, or RejectedInstance (a DIMSE
failure status with its reason). Anything else is a crash.

    PYTHONPATH=. .venv/bin/python tests/fuzz/fuzz_dicom_dataset.py -max_total_time=60 var/prove/corpus/dicom_dataset
"""

from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports():
    from appliance.errors import RejectedInstance
    from appliance.receive.validate import Limits, inspect_dataset, inspect_deflated

LIMITS = Limits(max_rows=512, max_columns=512, max_frames=16, max_pixel_bytes=1 << 20, max_non_pixel_bytes=1 << 16,
                max_inflated_bytes=1 << 20, max_sequence_depth=8)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 3:
            inspect_deflated(io.BytesIO(body), LIMITS)
        else:
            inspect_dataset(io.BytesIO(body), len(body), mode == 1, mode != 2, LIMITS)
    except RejectedInstance as exc:
        if not 0xA700 <= exc.status <= 0xCFFF:
            raise AssertionError(f"status {exc.status:#06x} is no failure status") from exc


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
