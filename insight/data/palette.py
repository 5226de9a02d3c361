"""The PASCAL VOC colour palette, for label maps written as palette PNGs."""

from __future__ import annotations


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 RGB entries."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette
