from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.dsutils import decode, encode

from appliance.errors import MalformedMessage
from appliance.receive import messages as m


def test_decodes_a_command_set_encoded_by_pynetdicom():
    command = Dataset()
    command.AffectedSOPClassUID = CTImageStorage
    command.CommandField = 0x0001
    command.MessageID = 7
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = "1.2.3.4.5"
    parsed = m.decode_command(encode(command, True, True))
    assert parsed == m.Command(0x0001, 7, True, CTImageStorage, "1.2.3.4.5")


def test_responses_decode_as_standard_command_sets():
    raw = m.encode_response(m.C_STORE_RSP, 9, 0xC211, CTImageStorage, "1.2.3", "bad UID")
    response = decode(BytesIO(raw), True, True)
    assert response.CommandField == 0x8001 and response.MessageIDBeingRespondedTo == 9
    assert response.Status == 0xC211 and response.ErrorComment == "bad UID"
    assert response.AffectedSOPInstanceUID == "1.2.3" and response.CommandDataSetType == 0x0101
    assert response.CommandGroupLength == len(raw) - 12


def test_file_meta_is_readable_by_pydicom():
    sop = generate_uid()
    meta = m.file_meta(CTImageStorage, sop, "1.2.840.10008.1.2.1", "CT_SCANNER")
    ds = pydicom.dcmread(BytesIO(meta + b"\x08\x00\x18\x00UI\x04\x001.2\x00"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == sop
    assert ds.file_meta.SourceApplicationEntityTitle == "CT_SCANNER"
    assert ds.SOPInstanceUID == "1.2"
    assert meta[:128] == bytes(128)


def test_pdv_round_trip_and_malformed_items():
    pdu = m.p_data_pdu(3, True, True, b"abcd")
    assert [(c, cmd, last, bytes(f)) for c, cmd, last, f in m.iter_pdvs(pdu[6:])] == [(3, True, True, b"abcd")]
    try:
        list(m.iter_pdvs(pdu[6:-1]))
    except MalformedMessage:
        pass
    else:
        raise AssertionError("a truncated PDV was accepted")
