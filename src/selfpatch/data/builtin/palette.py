"""The DAVIS / PASCAL VOC colour palette for indexed ('P') label PNGs.

DAVIS 2017 stores instance masks as palette PNGs whose pixel values are object ids (0 =
background) and whose palette is the PASCAL VOC one: colour ``i`` spreads the bits of ``i``
over the high bits of R, G and B (1 -> dark red, 2 -> dark green, 3 -> olive, ...).
"""

from __future__ import annotations

import numpy as np


def davis_palette(n: int = 256) -> np.ndarray:
    """The VOC/DAVIS palette, uint8 (n, 3).

    Bit ``3j + c`` of the index goes to bit ``7 - j`` of channel ``c`` (c = R, G, B).
    """
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for c in range(3):
            bit = (index >> (3 * j + c)) & 1
            palette[:, c] |= bit << (7 - j)
    return palette.astype(np.uint8)


def flat_palette() -> list[int]:
    """The palette as the flat 768-entry list ``PIL.Image.putpalette`` expects."""
    return davis_palette(256).reshape(-1).tolist()
