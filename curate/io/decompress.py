"""Compressed inputs read as a byte stream that survives a damaged file.

Arrow's compressed streams lose the whole block around a cut and raise an `OSError`, which a task retries as if
the disk had hiccupped. Here the file is fed through the codec's own incremental decompressor, so every byte before
the damage is delivered, and the damage is recorded (what, at which compressed and decompressed byte) instead of
raised. For line formats the partial last line of a damaged file is held back: it is not a record.
"""

from __future__ import annotations

import bz2
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

READ_BYTES = 1 << 18
FEED_BYTES = 1 << 14  # the codec is fed this much at a time: corrupt data loses at most this much before it
ZSTD_FEED_BYTES = 1 << 8  # zstd has no output bound: a small piece (at most 64 run-length blocks: 8 MB) instead
OUT_BYTES = 1 << 24  # the most one call decompresses: a bomb (1 GB of zeros in 1 MB) is delivered a piece at a time


@dataclass(frozen=True)
class Damage:
    reason: str  # "truncated_file" (the stream ends before its end marker) or "corrupt_file" (invalid data)
    compressed_offset: int  # bytes of the file read when the damage was found
    decompressed_offset: int  # bytes delivered before it
    detail: str
    tail: bytes  # the held-back partial last line

    def describe(self, path: str) -> str:
        what = "ends before the end of its compressed stream" if self.reason == "truncated_file" else (
            f"has invalid compressed data ({self.detail})")
        tail = self.tail[:200].decode("utf-8", "replace")
        return (f"{path} {what} at compressed byte {self.compressed_offset} (decompressed byte "
                f"{self.decompressed_offset}); rows before it are kept; the partial last record: {tail!r}")


def _decompressor(compression: str) -> Any:
    if compression == "gzip":
        return zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    if compression == "bz2":
        return bz2.BZ2Decompressor()
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    raise ValueError(f"unknown compression {compression!r}; allowed: gzip, bz2, zstd")


def _codec_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [zlib.error, OSError, EOFError, ValueError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class DecompressedStream:
    """A read-only binary stream over a gzip/bz2/zstd file (multi-member files too); `damage` is set at its end
    when the file was cut or corrupt."""

    def __init__(self, path: str, compression: str, hold_partial_line: bool = True):
        self.path = path
        self.compression = compression
        self.hold_partial_line = hold_partial_line
        self.damage: Damage | None = None
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by close() or at the end)
        self._codec = _decompressor(compression)
        self._errors = _codec_errors()
        self._pending = bytearray()
        self._compressed = 0  # bytes read from the file
        self._delivered = 0
        self._finished = False
        self._input = b""  # bytes read from the file, not yet fed to the codec
        self._draining = False  # the codec holds output it has not given yet (bz2)

    def _fill(self) -> None:
        """Decompress the next piece of the file into the pending bytes (at most OUT_BYTES), or finish."""
        if not self._input and not self._draining:
            data = self._file.read(READ_BYTES)
            self._compressed += len(data)
            if not data:  # an empty file is an empty input, not a damaged one
                self._finish(truncated=self._compressed > 0 and not self._codec.eof)
                return
            self._input = data
        feed = ZSTD_FEED_BYTES if self.compression == "zstd" else FEED_BYTES
        piece = b"" if self._draining else self._input[:feed]
        self._input = self._input if self._draining else self._input[feed:]
        try:
            self._pending += self._bounded(piece)
            if self._codec.eof:  # the next member of a multi-member file
                rest = self._codec.unused_data + self._input
                self._codec = _decompressor(self.compression) if rest.strip(b"\0") else _EndOfStream()
                self._input, self._draining = rest, False
        except self._errors as error:
            self._compressed -= len(self._input) + len(piece)  # where the bad piece starts
            self._finish(truncated=False, detail=str(error))

    def _bounded(self, piece: bytes) -> bytes:
        """One decompression call that gives at most OUT_BYTES; input it could not take goes back in front."""
        if isinstance(self._codec, _EndOfStream) or self.compression == "zstd":
            return self._codec.decompress(piece)
        out = self._codec.decompress(piece, OUT_BYTES)
        if self.compression == "gzip":
            self._input = self._codec.unconsumed_tail + self._input
        else:  # bz2 keeps the rest of its output inside until asked again
            self._draining = not self._codec.needs_input and not self._codec.eof
        return out

    def _finish(self, truncated: bool, detail: str = "") -> None:
        self._finished = True
        self._file.close()
        if not truncated and not detail:
            return
        tail = b""
        if self.hold_partial_line:
            cut = self._pending.rfind(b"\n") + 1
            tail = bytes(self._pending[cut:])
            del self._pending[cut:]
        self.damage = Damage("truncated_file" if truncated else "corrupt_file", self._compressed,
                             self._delivered + len(self._pending), detail or "unexpected end of data", tail)

    def read(self, size: int = -1) -> bytes:
        while not self._finished and (size < 0 or len(self._pending) < size):
            self._fill()
        if size < 0 or size >= len(self._pending):
            out, self._pending = bytes(self._pending), bytearray()
        else:
            out = bytes(self._pending[:size])
            del self._pending[:size]
        self._delivered += len(out)
        return out

    @property
    def compressed_read(self) -> int:
        """Bytes of the file read so far."""
        return self._compressed

    # the file-object protocol Arrow's readers ask of a Python stream
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._finished and not self._pending

    def close(self) -> None:
        self._finished = True
        self._file.close()


class _EndOfStream:
    """Stands in for a codec after the last member: only trailing padding followed."""

    eof = True
    unused_data = b""

    def decompress(self, data: bytes) -> bytes:
        if data.strip(b"\0"):
            raise ValueError("data after the end of the compressed stream")
        return b""
