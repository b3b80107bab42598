"""Floor of the segmentation probe: the same linear probe on raw pixels of each patch.

    python benchmarks/pixel_probe.py [--patch 16] [--size 192]

Each "token" is the patch's own pixels (RGB, 3 * p * p values; or grey, standardised per
patch), on the grid a ViT with that patch size would have, fed to ``evaluate_seg`` exactly as a
backbone's tokens are. What this scores is what local appearance alone gives; features must
carry context (which object a patch belongs to) to do better.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from selfpatch.data.builtin import ensure_builtin
from selfpatch.evaluate.seg import ProbeSettings, evaluate_seg


class PatchPixels(torch.nn.Module):
    """``(B, 3, H, W) -> (B, N, C * p * p)``: the pixels of each non-overlapping patch."""

    def __init__(self, patch_size: int, grey: bool) -> None:
        super().__init__()
        self.patch_size, self.grey = patch_size, grey

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.grey:
            images = images.mean(dim=1, keepdim=True)
        p = self.patch_size
        tokens = torch.nn.functional.unfold(images, p, stride=p).transpose(1, 2)
        if self.grey:  # shape of the brightness pattern, not its level
            tokens = (tokens - tokens.mean(-1, keepdim=True)) / (tokens.std(-1, keepdim=True)
                                                                 + 1e-3)
        return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--size", type=int, default=192, help="scene side fed to the probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = ensure_builtin()
    rows = {}
    for grey in (False, True):
        result = evaluate_seg(PatchPixels(args.patch, grey), data.seg_root, data.num_classes,
                              ProbeSettings(image_size=args.size), log=None)
        rows["grey" if grey else "rgb"] = {k: round(result[k], 2) for k in ("mIoU", "aAcc",
                                                                             "mAcc")}
        print(("grey" if grey else "rgb"), rows["grey" if grey else "rgb"], flush=True)
    print(json.dumps({"patch": args.patch, "size": args.size, **rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
