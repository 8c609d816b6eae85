"""What an image's structure may cost to decode, checked from its bytes before any decoder runs.

Pixels alone do not bound a decoder's work: a progressive JPEG may repeat a tiny scan thousands of times
(each one a pass over every block), a PNG may be cut into hundreds of thousands of chunks (each one a round
of Pillow's Python loop), and a run-length BMP of single-pixel runs is decoded in Python, run by run. No
photo, scan or drawing of a digit needs any of these, so such files are refused here, in time linear in the
bytes and at C speed, before Pillow sees them.
"""

from __future__ import annotations

import mmap
import re
import struct

from pipeline.common.errors import PipelineError

# libjpeg's progressive script has 10 scans (6 for gray) and mozjpeg's optimised ones about 20
MAX_JPEG_SCANS = 64
MAX_JPEG_SEGMENTS = 1024  # markers with a length (APPn, COM, DQT, DHT, SOF, SOS...) in one file
# libpng cuts image data into 8 KB chunks: a 10 MB PNG has about 1,300
MAX_PNG_CHUNKS = 4096
# Pillow decodes run-length BMPs in Python, about 4 MB a second: a drawing's runs take a few kilobytes
MAX_BMP_RLE_BYTES = 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the next marker after a scan's entropy-coded data: 0xFF, any 0xFF fill, then neither a stuffed zero nor RSTn
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def check_structure(data: bytes | mmap.mmap, name: str) -> None:
    """Refuse a JPEG, PNG or BMP whose structure costs more to decode than any digit needs (others pass)."""
    if data[:2] == b"\xff\xd8":
        _check_jpeg(data, name)
    elif data[:8] == PNG_SIGNATURE:
        _check_png(data, name)
    elif data[:2] == b"BM" and len(data) >= 34 and struct.unpack_from("<I", data, 30)[0] in (1, 2) \
            and len(data) > MAX_BMP_RLE_BYTES:  # compression 1 and 2: RLE8 and RLE4
        raise PipelineError(f"{name}: run-length BMP of more than {MAX_BMP_RLE_BYTES:,} bytes is refused "
                            "(no digit needs it; it is decoded run by run); send PNG")


def _check_jpeg(data: bytes | mmap.mmap, name: str) -> None:
    position, scans, segments = 2, 0, 0
    while True:
        found = _NEXT_MARKER.search(data, position)
        if found is None:
            return  # truncated: the decoder says so
        marker, position = found.group()[-1], found.end()
        if marker in (0xD9, 0x01):  # end of image; TEM, which has no length
            if marker == 0xD9:
                return
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise PipelineError(f"{name}: JPEG of more than {MAX_JPEG_SEGMENTS} segments is refused "
                                "(no digit needs them; they cost decoding time)")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise PipelineError(f"{name}: JPEG of more than {MAX_JPEG_SCANS} scans is refused "
                                    "(no digit needs them; each one costs a pass over the whole image)")
        if position + 2 > len(data):
            return
        position += struct.unpack_from(">H", data, position)[0]  # the segment's length; a scan's data follows


def _check_png(data: bytes | mmap.mmap, name: str) -> None:
    position, chunks = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise PipelineError(f"{name}: PNG of more than {MAX_PNG_CHUNKS:,} chunks is refused "
                                "(no digit needs them; each one costs decoding time)")
        if kind == b"IEND":
            return
        position += 12 + length  # length, type, data, CRC
