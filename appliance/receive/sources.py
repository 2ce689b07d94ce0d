"""What the dataset walker reads from: a stretch of a file, or deflated data inflated on
the way.

Both hand out bytes by position and skip forward over values without keeping them, so a
value of any length costs no memory. :class:`InflatingSource` inflates at most
:data:`CHUNK` bytes at a time while it is walked: nothing is inflated ahead of the walk,
and a refusal made at an element's header (a Pixel Data length that does not match the
declared image, say) comes before its value is ever inflated.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from appliance import dimse
from appliance.errors import RejectedInstance

#: Most bytes read or inflated in one step.
CHUNK = 1 << 20


def _past_the_end() -> RejectedInstance:
    return RejectedInstance(dimse.UNDECODABLE, "element value runs past the end of the data")


class FileSource:
    """The bytes of ``stream`` from its current position up to ``end``."""

    def __init__(self, stream: BinaryIO, end: int):
        self._stream = stream
        self._end = end

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end)."""
        return self._stream.read(max(0, min(size, self._end - self._stream.tell())))

    def skip(self, length: int) -> None:
        position = self._stream.tell() + length
        if position > self._end:
            raise _past_the_end()
        self._stream.seek(position)

    def at_end(self) -> bool:
        return self._stream.tell() >= self._end


class InflatingSource:
    """Raw-deflate data (Deflated Explicit VR Little Endian) read as its inflated bytes.

    Positions count inflated bytes. More than ``limit`` of them is refused (0xC214), as is
    corrupt deflate data.
    """

    def __init__(self, stream: BinaryIO, limit: int):
        self._stream = stream
        self._limit = limit
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._position = 0  # inflated bytes handed out or skipped
        self._ended = False

    def tell(self) -> int:
        return self._position

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end)."""
        self._fill(size)
        data = bytes(self._buffer[:size])
        self._take(len(data))
        return data

    def skip(self, length: int) -> None:
        while length:
            self._fill(min(length, CHUNK))
            step = min(length, len(self._buffer))
            if not step:
                raise _past_the_end()
            self._take(step)
            length -= step

    def at_end(self) -> bool:
        self._fill(1)
        return not self._buffer

    def _take(self, count: int) -> None:
        del self._buffer[:count]
        self._position += count

    def _fill(self, wanted: int) -> None:
        """Inflate, :data:`CHUNK` bytes at most a step, until ``wanted`` bytes are buffered
        or the data ends."""
        while len(self._buffer) < wanted and not self._ended:
            try:
                pending = self._inflater.unconsumed_tail or self._stream.read(CHUNK)
                if pending and not self._inflater.eof:
                    data = self._inflater.decompress(pending, CHUNK)
                else:  # the input, or the deflate stream, has ended
                    data, self._ended = self._inflater.flush(), True
            except zlib.error as exc:
                raise RejectedInstance(dimse.INFLATE_FAILED, f"deflated data is corrupt: {exc}") from None
            if self._position + len(self._buffer) + len(data) > self._limit:
                raise RejectedInstance(dimse.INFLATE_FAILED, f"inflates past {self._limit} bytes")
            self._buffer += data
