"""How each version of the built-in data colours its objects and backgrounds.

v1 drew backgrounds and object tints from overlapping brightness ranges, so whether an
object was lighter or darker than its surround was a coin flip (object darker in 51.6 % of
the k-NN images); a ViT trained from scratch, even with labels, stayed near chance on it.
v2 keeps every hue, the texture and the smooth colour fields, but draws backgrounds darker
than the objects, as a lit subject stands out from its surroundings in most photos. The
choice was measured, not guessed: ``benchmarks/data_design.py``, results in docs/data.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Look:
    """Colour ranges of one data version.

    Attributes:
        background_gain: multiplies the whole background field (base colour, cell offsets
            and texture), after it is drawn; 1 keeps v1's backgrounds.
        tint_value: HSV value range of object tints (the photo's shading multiplies it).
    """

    background_gain: float = 1.0
    tint_value: tuple[float, float] = (0.6, 1.0)


#: Looks by data version. Version 1 must never change (old results stay reproducible).
LOOKS: dict[int, Look] = {
    1: Look(background_gain=1.0, tint_value=(0.6, 1.0)),
    2: Look(background_gain=0.4, tint_value=(0.6, 1.0)),
}
#: The newest look (default of every rendering function).
LATEST: Look = LOOKS[max(LOOKS)]
