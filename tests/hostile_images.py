"""Images whose structure costs a decoder far more than their pixels: what `image_budget` refuses."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def jpeg_of_scans(scans: int) -> bytes:
    """A blank 2000x2000 progressive JPEG whose last scan repeats until there are `scans` (436 KB at 3,000
    costs libjpeg about 13 s): each scan is a pass over every block."""
    buffer = io.BytesIO()
    Image.new("L", (2000, 2000), 255).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    last, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    have = data.count(b"\xff\xda")
    return data[:end] + data[last:end] * (scans - have) + data[end:]


def png_of_chunks(chunks: int) -> bytes:
    """A valid 10x1 PNG carrying `chunks` text chunks: each one a round of Pillow's Python loop."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 1, 8, 0, 0, 0, 0))
    text = chunk(b"tEXt", b"a\0b")
    pixels = chunk(b"IDAT", zlib.compress(b"\0" + b"\xff" * 10))
    return b"\x89PNG\r\n\x1a\n" + header + text * (chunks - 3) + pixels + chunk(b"IEND", b"")


def bmp_of_runs(side: int) -> bytes:
    """A side x side run-length (RLE8) BMP of single-pixel runs: 8 MB at 2000 px, about 2 s of Pillow's Python."""
    data = (b"\x01\x00" * side + b"\x00\x00") * side + b"\x00\x01"  # runs of one pixel, end of line; end
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + palette + data
