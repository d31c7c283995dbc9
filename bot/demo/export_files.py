"""Generated export files for the fake Asana: valid gzip of any exact size, streamed, by range.

A file of `size` bytes is a gzip member whose deflate stream is made of stored (uncompressed)
blocks of JSON lines, so every byte at every offset is computed, never held: a 2 GiB file costs
no memory, and a `Range` request starts anywhere. Its MD5 (served as the ETag, like S3's for a
single-part object) and its CRC-32 (the gzip trailer) are computed once per size, in one pass.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no name, mtime 0, unix
_TRAILER = 8  # CRC-32 and ISIZE
_BLOCK_HEAD = 5  # BFINAL/BTYPE byte, LEN, NLEN
_MAX_BLOCK = 65535
_SMALLEST = len(_HEADER) + _BLOCK_HEAD + _TRAILER
_LINE = (
    b'{"resource_type":"task","name":"Generated task for the fake export","notes":"'
    + b"lorem ipsum dolor sit amet " * 3
    + b'"}\n'
)
_PATTERN = _LINE * (1 + (_MAX_BLOCK * 2) // len(_LINE))


@dataclass(frozen=True)
class ExportFile:
    """The layout of one generated file of `size` bytes (at least 23)."""

    size: int

    def __post_init__(self) -> None:
        if self.size < _SMALLEST:
            raise ValueError(f"a generated gzip file has at least {_SMALLEST} bytes")

    @functools.cached_property
    def _blocks(self) -> tuple[int, int, int]:
        """(number of blocks, data bytes, data bytes per block before the remainder)."""
        room = self.size - len(_HEADER) - _TRAILER
        count = max(1, -(-room // (_MAX_BLOCK + _BLOCK_HEAD)))
        data = room - _BLOCK_HEAD * count
        return count, data, data // count

    def _block_sizes(self) -> Iterator[int]:
        count, data, each = self._blocks
        extra = data - each * count  # the first `extra` blocks carry one byte more
        for index in range(count):
            yield each + (1 if index < extra else 0)

    def _plain(self) -> Iterator[bytes]:
        """The whole file, in pieces of at most one block."""
        yield _HEADER
        count, _, _ = self._blocks
        position = 0  # offset in the uncompressed data
        for index, length in enumerate(self._block_sizes()):
            start = position % len(_LINE)
            data = _PATTERN[start : start + length]
            final = 1 if index == count - 1 else 0
            yield bytes([final]) + struct.pack("<HH", length, length ^ 0xFFFF) + data
            position += length
        yield struct.pack("<II", self.crc32, position & 0xFFFFFFFF)

    @functools.cached_property
    def crc32(self) -> int:
        crc, position = 0, 0
        for length in self._block_sizes():
            start = position % len(_LINE)
            crc = zlib.crc32(_PATTERN[start : start + length], crc)
            position += length
        return crc

    @functools.cached_property
    def md5(self) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for piece in self._plain():
            digest.update(piece)
        return digest.hexdigest()

    @functools.cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for piece in self._plain():
            digest.update(piece)
        return digest.hexdigest()

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the file, in pieces of at most 64 KiB."""
        end = self.size if end is None else min(end, self.size)
        offset = 0
        for piece in self._plain():
            piece_end = offset + len(piece)
            if piece_end > start and offset < end:
                yield piece[max(0, start - offset) : min(len(piece), end - offset)]
            if piece_end >= end:
                return
            offset = piece_end


@functools.lru_cache(maxsize=16)
def export_file(size: int) -> ExportFile:
    """The generated file of this size (its checksums computed once, then cached)."""
    return ExportFile(size)
