#!/usr/bin/env python3
"""Draws the console's PNG icons (public/icons/) from the same shapes as icon.svg, with the
standard library only. Run again after changing the design: python3 scripts/icons.py"""
import struct
import zlib
from pathlib import Path

BRAND = (0x0B, 0x4F, 0x6C, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)
# In a 64-unit square: three bars (x, y, w, h), as in icon.svg.
BARS = [(12, 22, 40, 6), (12, 34, 40, 6), (18, 46, 28, 6)]


def pixel(x, y, size, radius, inset):
    u = 64 * x / size
    v = 64 * y / size
    # Maskable icons keep their content inside the central 80 %: shrink the bars towards it.
    bu = 32 + (u - 32) / inset
    bv = 32 + (v - 32) / inset
    for (bx, by, bw, bh) in BARS:
        if bx <= bu < bx + bw and by <= bv < by + bh:
            return WHITE
    if radius:
        cx = min(max(u, radius), 64 - radius)
        cy = min(max(v, radius), 64 - radius)
        if (u - cx) ** 2 + (v - cy) ** 2 > radius ** 2:
            return CLEAR
    return BRAND


def png(size, radius, inset):
    rows = b"".join(
        b"\0" + b"".join(bytes(pixel(x + 0.5, y + 0.5, size, radius, inset)) for x in range(size))
        for y in range(size)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


out = Path(__file__).resolve().parent.parent / "public" / "icons"
out.mkdir(parents=True, exist_ok=True)
(out / "icon-192.png").write_bytes(png(192, 12, 1.0))
(out / "icon-512.png").write_bytes(png(512, 12, 1.0))
(out / "icon-maskable-512.png").write_bytes(png(512, 0, 1.25))
