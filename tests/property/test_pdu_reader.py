"""The P-DATA reader and the command-set decoder on any bytes: MalformedMessage or a
result, nothing else; what the appliance encodes it reads back the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import DicomError
from appliance.receive.messages import decode_command, iter_pdvs, p_data_pdu


@given(st.binary(max_size=2048))
def test_any_p_data_body_is_split_into_pdvs_or_refused(body):
    try:
        pdvs = list(iter_pdvs(body))
    except DicomError:
        return
    assert sum(len(fragment) + 6 for _, _, _, fragment in pdvs) == len(body)


@given(st.lists(st.tuples(st.integers(1, 255), st.booleans(), st.booleans(), st.binary(max_size=300)), max_size=6))
def test_pdvs_the_appliance_writes_read_back_the_same(pdvs):
    body = b"".join(p_data_pdu(*pdv)[6:] for pdv in pdvs)
    assert [(c, cmd, last, bytes(f)) for c, cmd, last, f in iter_pdvs(body)] == pdvs


@given(st.binary(max_size=1024))
def test_any_command_set_is_decoded_or_refused(data):
    try:
        decode_command(data)
    except DicomError:
        pass
