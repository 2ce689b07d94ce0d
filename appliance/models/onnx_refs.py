"""The external-data locations an ONNX model names, read from its protobuf bytes (pure).

The runtime does not import the ``onnx`` package (see the runtime-imports test), so this
walks the protobuf wire format (https://protobuf.dev/programming-guides/encoding/) over
just the messages that can hold a tensor: the model's graph, training graphs and functions,
their nodes, attributes (subgraphs included) and sparse tensors. Every tensor's
``external_data`` entry with key ``location`` is returned, whatever its ``data_location``.
Field numbers are those of onnx.proto (IR version 10).
"""

from __future__ import annotations

from collections.abc import Iterator

_MODEL, _TRAINING, _FUNCTION, _GRAPH, _NODE, _ATTRIBUTE, _SPARSE, _TENSOR, _ENTRY = range(9)
#: For each message kind: field number -> kind of the sub-message it holds.
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},
    _ENTRY: {},
}
MAX_DEPTH = 64


class NotOnnx(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise NotOnnx("truncated or over-long varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview | None]]:
    """(field number, wire type, value) of each field; value is a memoryview for wire type 2."""
    offset = 0
    while offset < len(data):
        value: int | memoryview | None
        key, offset = _varint(data, offset)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, offset = _varint(data, offset)
        elif wire == 1 or wire == 5:
            offset += 8 if wire == 1 else 4
            value = None
        elif wire == 2:
            length, offset = _varint(data, offset)
            value = data[offset : offset + length]
            offset += length
        else:
            raise NotOnnx(f"unsupported wire type {wire}")
        if offset > len(data):
            raise NotOnnx("field runs past the end of its message")
        yield number, wire, value


def external_locations(model: bytes) -> list[str]:
    """Every external-data location named in ``model`` (a serialised ModelProto).

    Raises
    ------
    NotOnnx
        When the bytes do not parse, or nest deeper than :data:`MAX_DEPTH`.
    """
    found: list[str] = []
    stack = [(_MODEL, memoryview(model), 0)]
    while stack:
        kind, data, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise NotOnnx(f"messages nested deeper than {MAX_DEPTH}")
        entry: dict[int, bytes] = {}
        for number, _, value in _fields(data):
            child = _CHILDREN[kind].get(number)
            if child is not None:
                if not isinstance(value, memoryview):
                    raise NotOnnx(f"field {number} should be a message")
                stack.append((child, value, depth + 1))
            elif kind == _ENTRY and isinstance(value, memoryview) and number in (1, 2):
                entry[number] = bytes(value)
        if kind == _ENTRY and entry.get(1) == b"location":
            try:
                found.append(entry.get(2, b"").decode("utf-8"))
            except UnicodeDecodeError:
                raise NotOnnx("external data location is not UTF-8") from None
    return found
