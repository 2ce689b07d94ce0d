"""atheris target: the P-DATA-TF reader and the command-set decoder on any bytes.
Allowed: their results, or MalformedMessage / DicomError. Anything else is a crash.

    PYTHONPATH=. .venv/bin/python tests/fuzz/fuzz_pdu.py -max_total_time=60 var/prove/corpus/pdu
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from appliance.errors import DicomError
    from appliance.receive.messages import decode_command, iter_pdvs


def one_input(data: bytes) -> None:
    try:
        for _context, is_command, _last, fragment in iter_pdvs(data):
            if is_command:
                decode_command(bytes(fragment))
    except DicomError:
        pass
    try:
        decode_command(data)
    except DicomError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
