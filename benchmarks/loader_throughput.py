"""Images per second of the multi-crop DataLoader alone (no model), and of the device-side path.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/loader_throughput.py            # < 2 min on 2 CPU cores
    PYTHONPATH=src python benchmarks/loader_throughput.py --data DIR --workers 0 4 8 16

Without ``--data`` it writes random smooth JPEGs to a temporary folder: ImageNet-sized
(500x375) ones for the paper setting and 96x96 ones, the built-in scenes' size, for the small
setting. Settings:

- ``paper``: 2 x 224 px (scale 0.25-1) + 8 x 96 px (scale 0.05-0.25), as the paper;
- ``small``: 2 x 64 px (scale 0.3-1) + 4 x 32 px (scale 0.08-0.3), as ``configs/cpu-quick.yaml``.

Modes: ``cpu`` is the full augmentation in the workers (``MultiCropTransform``);
``gpu-prep`` is the loader half of ``GpuMultiCrop`` (decode + resize to a fixed uint8 square).
With CUDA it also times ``GpuMultiCrop`` on the device (batched), against a per-sample loop of
the CPU transform on device tensors. images/s counts from the first batch's arrival to the last
(worker start-up excluded; prefetching makes multi-worker numbers slightly optimistic for
short runs, so use enough images per worker).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from selfpatch.data.folder import ImageFolderDataset
from selfpatch.data.transforms import (
    GpuMultiCrop,
    MultiCropConfig,
    MultiCropTransform,
    gpu_multicrop_collate,
    multicrop_collate,
)

SETTINGS = {
    "paper": (MultiCropConfig(), (500, 375)),
    "small": (
        MultiCropConfig(global_size=64, global_scale=(0.3, 1.0), local_size=32,
                        local_scale=(0.08, 0.3), n_local=4),
        (96, 96),
    ),
}


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """``n`` JPEGs of ``size`` (W, H): smooth colour fields plus noise, so that they compress
    and decode like photos rather than like pure noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC))
        noise = rng.normal(0, 12, field.shape)
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def loader_rate(dataset, collate, workers: int, batch_size: int, pin: bool) -> float:
    """Images/s of one pass, from the first batch's arrival to the end."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate, pin_memory=pin, drop_last=False)
    start, counted = None, 0
    for batch in loader:
        n = batch[-1].numel()  # the ok flags: one per image
        if start is None:
            start = time.perf_counter()
            continue
        counted += n
    elapsed = time.perf_counter() - start if start is not None else float("nan")
    return counted / elapsed if counted else float("nan")


def device_rates(config: MultiCropConfig, batch_size: int, size: tuple[int, int]) -> list[str]:
    """Device-side augmentation rates (CUDA only): batched GpuMultiCrop vs per-sample loop."""
    device = torch.device("cuda")
    gpu = GpuMultiCrop(config)
    s = gpu.source_size
    images = torch.randint(0, 256, (batch_size, 3, s, s), dtype=torch.uint8, device=device)
    sizes = torch.tensor([[size[1], size[0]]] * batch_size, device=device)
    for _ in range(3):
        gpu(images, sizes)
    torch.cuda.synchronize()
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        gpu(images, sizes)
    torch.cuda.synchronize()
    batched = reps * batch_size / (time.perf_counter() - start)
    # The alternative the brief allowed: the CPU-path transform, sample by sample, on device.
    per_sample = MultiCropTransform(config)
    n_loop = min(batch_size, 32)
    for i in range(2):
        per_sample(images[i])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(n_loop):
        per_sample(images[i])
    torch.cuda.synchronize()
    looped = n_loop / (time.perf_counter() - start)
    return [f"GpuMultiCrop batched (B={batch_size}): {batched:,.0f} images/s",
            f"MultiCropTransform per-sample loop on {device}: {looped:,.0f} images/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="folder of images (default: generated)")
    parser.add_argument("--settings", nargs="+", default=["paper", "small"], choices=SETTINGS)
    parser.add_argument("--modes", nargs="+", default=["cpu", "gpu-prep"],
                        choices=["cpu", "gpu-prep"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-images", type=int, default=None,
                        help="images per pass (default: 96 paper, 384 small)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device-batch", type=int, default=256,
                        help="batch size for the device-side timing (CUDA only)")
    args = parser.parse_args()

    # Workers run single-threaded (PyTorch's default in them); do the same in the main
    # process so that workers=0 measures the same per-image work.
    torch.set_num_threads(1)
    pins = [False, True] if torch.cuda.is_available() else [False]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings:
            config, image_size = SETTINGS[name]
            n = args.n_images or (96 if name == "paper" else 384)
            folder = args.data
            if folder is None:
                folder = Path(tmp) / name
                write_images(folder, n, image_size)
            for mode in args.modes:
                if mode == "cpu":
                    transform, collate = MultiCropTransform(config), multicrop_collate
                else:
                    transform = GpuMultiCrop(config).loader_transform()
                    collate = gpu_multicrop_collate
                dataset = ImageFolderDataset(folder, transform=transform)
                if args.data is not None and len(dataset) > n:
                    dataset.files = dataset.files[:n]
                for workers in args.workers:
                    for pin in pins:
                        rate = loader_rate(dataset, collate, workers, args.batch_size, pin)
                        rows.append((name, mode, workers, pin, rate))
                        print(f"{name:6s} {mode:9s} workers={workers:<2d} pin={pin!s:5s} "
                              f"{rate:9.1f} images/s", flush=True)

    print("\n| setting | mode | workers | pin_memory | images/s |")
    print("|---|---|---|---|---|")
    for name, mode, workers, pin, rate in rows:
        pin_text = str(pin) if torch.cuda.is_available() else "n/a (no CUDA)"
        print(f"| {name} | {mode} | {workers} | {pin_text} | {rate:.1f} |")
    if torch.cuda.is_available():
        print(f"\nDevice side ({torch.cuda.get_device_name()}):")
        for name in args.settings:
            config, image_size = SETTINGS[name]
            for line in device_rates(config, args.device_batch, image_size):
                print(f"  {name}: {line}")


if __name__ == "__main__":
    main()
