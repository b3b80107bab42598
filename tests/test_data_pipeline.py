"""Image folder scanning, unreadable-file handling and multi-crop views (CPU and device paths)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from selfpatch.data.folder import ImageFolderDataset, list_image_files
from selfpatch.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GpuMultiCrop,
    MultiCropConfig,
    MultiCropTransform,
    PrepareForGpu,
    blur_kernel_size,
    crop_resize,
    gaussian_blur,
    gpu_multicrop_collate,
    multicrop_collate,
    sample_crop_boxes,
)
from selfpatch.errors import SelfPatchError

SMALL = MultiCropConfig(global_size=64, local_size=32, n_local=3)


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test single-threaded, as DataLoader workers do: the per-image transforms are
    tiny ops, and on a busy machine every multi-threaded op can wait a scheduler quantum."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_image(h: int = 48, w: int = 80, seed: int = 0) -> Image.Image:
    """A colourful, smooth RGB image (random colours on a coarse grid, upsampled)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)


def save(path: Path, image: Image.Image | None = None, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or smooth_image(seed=len(str(path)))).save(path, format=fmt)
    return path


def truncated(path: Path, fmt: str) -> Path:
    """Write the first half of a valid ``fmt`` file to ``path``."""
    buffer = io.BytesIO()
    smooth_image().save(buffer, format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def corrupt_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """6 good images and 3 bad ones (garbage .jpg, truncated .png, truncated .jpg)."""
    good = [save(root / f"good{i}.jpg", fmt="JPEG") for i in range(6)]
    garbage = root / "b_garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    bad = [garbage, truncated(root / "c_cut.png", "PNG"), truncated(root / "d_cut.jpg", "JPEG")]
    return good, bad


# ----- folder scanning -------------------------------------------------------------------------


def test_scan_is_recursive_case_insensitive_and_sorted(tmp_path):
    names = ["z.webp", "a/x.JPG", "a/b/y.png", "c.BMP", "d/e.TIFF", "d/f.tif", "g.gif",
             "h.jpeg"]
    for name in names:
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}.get(
            name.rsplit(".", 1)[1].lower())
        save(tmp_path / name, fmt=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden.jpg", fmt="JPEG")
    save(tmp_path / ".cache" / "x.jpg", fmt="JPEG")
    files = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert files == sorted(names)
    dataset = ImageFolderDataset(tmp_path)
    assert len(dataset) == len(names)
    for i in range(len(dataset)):
        image, ok = dataset[i]
        assert ok and image.mode == "RGB"


def test_imagefolder_layout_and_modes_become_rgb(tmp_path):
    save(tmp_path / "cat" / "1.png", Image.new("L", (20, 30), 128))
    rgba = Image.new("RGBA", (20, 30), (10, 20, 30, 0))
    save(tmp_path / "cat" / "2.png", rgba)
    palette = Image.new("P", (20, 30), 3)
    palette.info["transparency"] = 3
    save(tmp_path / "dog" / "3.png", palette)
    save(tmp_path / "dog" / "4.jpg", fmt="JPEG")
    dataset = ImageFolderDataset(str(tmp_path), transform=tvf.pil_to_tensor)
    assert len(dataset) == 4
    for i in range(4):
        x, ok = dataset[i]
        assert ok and x.shape[0] == 3 and x.dtype == torch.uint8


# ----- errors ----------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(SelfPatchError, match="does not exist") as info:
        ImageFolderDataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_root_is_a_file(tmp_path):
    path = save(tmp_path / "one.jpg", fmt="JPEG")
    with pytest.raises(SelfPatchError, match="not a folder"):
        ImageFolderDataset(path)


@pytest.mark.parametrize("content", ["empty", "no_images"])
def test_folder_without_images(tmp_path, content):
    if content == "no_images":
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "readme.txt").write_text("hi")
    with pytest.raises(SelfPatchError, match="no image files found") as info:
        ImageFolderDataset(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and ".jpg" in message and ".png" in message
    assert "\n" not in message


def test_only_unreadable_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    truncated(tmp_path / "b.png", "PNG")
    with pytest.raises(SelfPatchError, match="none of the 2 image files") as info:
        ImageFolderDataset(tmp_path).scan()
    assert str(tmp_path) in str(info.value) and "a.jpg" in str(info.value)
    # Without a scan, loading finds out too, and says the same.
    with pytest.raises(SelfPatchError, match="could be read"):
        ImageFolderDataset(tmp_path)[0]


# ----- unreadable files ------------------------------------------------------------------------


def test_unreadable_files_are_replaced_and_counted(tmp_path):
    good, bad = corrupt_folder(tmp_path)
    dataset = ImageFolderDataset(tmp_path, transform=tvf.pil_to_tensor)
    samples = [dataset[i] for i in range(len(dataset))]
    flags = [ok for _, ok in samples]
    assert len(samples) == 9 and flags.count(False) == 3
    assert sorted(dataset.bad_files) == sorted(bad)
    # Sorted order is b_garbage, c_cut, d_cut, good0...: each bad index gets the next readable
    # file (good0), in this process and in a fresh one (as a worker would be).
    x, ok = dataset[dataset.files.index(bad[0])]
    assert not ok and torch.equal(x, dataset[dataset.files.index(good[0])][0])
    fresh = ImageFolderDataset(tmp_path, transform=tvf.pil_to_tensor)
    assert torch.equal(fresh[dataset.files.index(bad[2])][0], x)


def test_scan_drops_unreadable_files_and_reports_them(tmp_path):
    good, bad = corrupt_folder(tmp_path)
    dataset = ImageFolderDataset(tmp_path)
    report = dataset.scan(verify=True)
    # verify catches garbage and truncated PNGs; a truncated JPEG may need a full decode.
    names = [p.name for p, _ in report.bad]
    assert names[:2] == ["b_garbage.jpg", "c_cut.png"]
    summary = report.summary()
    assert summary.startswith(f"{len(names)} unreadable files skipped: first ones b_garbage.jpg (")
    assert len(dataset) == 9 - len(names) and sorted(dataset.bad_files) == sorted(report.bad_paths)
    full = ImageFolderDataset(tmp_path).scan(full_decode=True)
    assert full.n_files == 9 and full.n_ok == 6
    assert sorted(p for p, _ in full.bad) == sorted(bad)
    assert ImageFolderDataset(tmp_path).scan(verify=False).n_files == 9


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_survives_unreadable_files(tmp_path, workers):
    corrupt_folder(tmp_path)
    dataset = ImageFolderDataset(tmp_path, transform=MultiCropTransform(SMALL))
    loader = DataLoader(dataset, batch_size=4, num_workers=workers,
                        collate_fn=multicrop_collate)
    seen, bad = 0, 0
    for views, ok in loader:
        assert len(views) == SMALL.n_views
        seen += ok.numel()
        bad += int((~ok).sum())
    assert (seen, bad) == (9, 3)


# ----- multi-crop (CPU path) -------------------------------------------------------------------


@pytest.mark.parametrize("n_local", [3, 0])
def test_multicrop_shapes_count_dtype(n_local):
    config = MultiCropConfig(global_size=64, local_size=32, n_local=n_local)
    transform = MultiCropTransform(config)
    for image in (smooth_image(48, 80), smooth_image(200, 90)):  # smaller and larger than crops
        views = transform(image)
        assert len(views) == 2 + n_local
        assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * n_local
        assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in views)
    tensor_views = transform(tvf.pil_to_tensor(smooth_image()))  # uint8 tensors work too
    assert [tuple(v.shape) for v in tensor_views] == [tuple(v.shape) for v in views]
    batch = multicrop_collate([(transform(smooth_image(seed=s)), s != 1) for s in range(3)])
    stacked, ok = batch
    assert [tuple(v.shape) for v in stacked] == [(3, 3, 64, 64)] * 2 + [(3, 3, 32, 32)] * n_local
    assert ok.tolist() == [True, False, True]


def test_normalisation_statistics():
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    low, high = (0 - mean) / std, (1 - mean) / std
    torch.manual_seed(0)
    transform = MultiCropTransform(MultiCropConfig(global_size=32, local_size=16, n_local=2))
    # Half black, half white: every view stays within the normalised [0, 1] range per channel.
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    for view in transform(Image.fromarray(pixels)):
        assert (view >= low - 1e-5).all() and (view <= high + 1e-5).all()
    # Uniform noise has mean 0.5 and loses little of it to the augmentations (view 1 has no
    # solarize; brightness clipping costs ~0.01): the views' mean must sit near
    # (0.5 - mean) / std per channel. Unnormalised or doubly normalised output is far off.
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    first = torch.stack([transform(noise)[0] for _ in range(100)])
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(first.mean(dim=(0, 2, 3)), expected, atol=0.2)
    assert (first.std(dim=(0, 2, 3)) > 0.3).all()


def test_multicrop_is_deterministic_under_manual_seed():
    transform = MultiCropTransform(SMALL)
    image = smooth_image()
    torch.manual_seed(123)
    a = transform(image)
    torch.manual_seed(123)
    b = transform(image)
    torch.manual_seed(124)
    c = transform(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_config_validation():
    with pytest.raises(SelfPatchError, match="global_size"):
        MultiCropConfig(global_size=0)
    with pytest.raises(SelfPatchError, match="local_scale"):
        MultiCropConfig(local_scale=(0.3, 0.2))
    with pytest.raises(SelfPatchError, match="global_scale"):
        MultiCropConfig(global_scale=(0.0, 1.0))
    with pytest.raises(SelfPatchError, match="global_scale"):
        MultiCropConfig(global_scale=(0.5, 1.5))
    with pytest.raises(SelfPatchError, match="n_local"):
        MultiCropConfig(n_local=-1)
    with pytest.raises(SelfPatchError, match="blur_kernel"):
        MultiCropConfig(blur_kernel=4)
    with pytest.raises(SelfPatchError, match="too large"):
        MultiCropConfig(local_size=8, blur_kernel=23)
    assert MultiCropConfig().n_views == 10


def test_blur_kernel_sizes_and_separable_blur_matches_v2():
    assert [blur_kernel_size(s) for s in (224, 96, 64, 4)] == [23, 13, 13, 7]
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 30)
    sigma = torch.tensor([0.3, 1.9])
    ours = gaussian_blur(x, sigma, 13)
    ref = torch.stack([tvf.gaussian_blur(x[i], [13, 13], [s.item()] * 2)
                       for i, s in enumerate(sigma)])
    assert torch.allclose(ours, ref, atol=1e-5)


# ----- device path (runs on CPU here) ----------------------------------------------------------


def test_gpu_multicrop_shapes_and_determinism():
    gpu = GpuMultiCrop(SMALL)
    assert gpu.source_size == 73
    prepared = [gpu.loader_transform()(smooth_image(48 + 7 * i, 80, seed=i)) for i in range(5)]
    images, sizes, ok = gpu_multicrop_collate([(p, True) for p in prepared])
    assert images.shape == (5, 3, 73, 73) and images.dtype == torch.uint8
    assert sizes.tolist()[1] == [55, 80] and ok.all()
    torch.manual_seed(0)
    views = gpu(images, sizes)
    torch.manual_seed(0)
    again = gpu(images, sizes)
    assert [tuple(v.shape) for v in views] == [(5, 3, 64, 64)] * 2 + [(5, 3, 32, 32)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    assert len(GpuMultiCrop(MultiCropConfig(64, n_local=0, local_size=32))(images, sizes)) == 2


def test_crop_resize_matches_torchvision_resized_crop():
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 10), size=(60, 80), mode="bilinear")
    box = torch.tensor([[7.0, 11.0, 30.0, 41.0]])
    for flip in (False, True):
        ours = crop_resize(x, torch.tensor([[60, 80]]), box, torch.tensor([flip]), 24)
        ref = tvf.resized_crop(x, 7, 11, 30, 41, [24, 24], antialias=False,
                               interpolation=v2.InterpolationMode.BICUBIC).clamp(0, 1)
        ref = ref.flip(-1) if flip else ref
        # Equal away from the box edges (there we read real pixels, torchvision repeats).
        assert torch.allclose(ours[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5)


def test_crop_boxes_follow_torchvision_distribution():
    torch.manual_seed(0)
    n, (h, w) = 3000, (375, 500)
    rrc = v2.RandomResizedCrop(32, scale=(0.05, 0.25))
    params = [rrc.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
    ref = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in params]).float()
    ours = sample_crop_boxes(torch.tensor([[h, w]] * n), (0.05, 0.25))
    assert (ours[:, 2] <= h).all() and (ours[:, 3] <= w).all() and (ours[:, :2] >= 0).all()
    assert (ours[:, 0] + ours[:, 2] <= h).all() and (ours[:, 1] + ours[:, 3] <= w).all()
    for boxes in (ref, ours):
        area = boxes[:, 2] * boxes[:, 3] / (h * w)
        assert area.min() >= 0.049 and area.max() <= 0.251
    area = lambda b: (b[:, 2] * b[:, 3]).mean() / (h * w)  # noqa: E731
    assert abs(area(ours) - area(ref)) < 0.005
    assert abs((ours[:, 3] / ours[:, 2]).mean() - (ref[:, 3] / ref[:, 2]).mean()) < 0.02
    # Impossible aspect ratios fall back to the central crop, as torchvision does.
    thin = sample_crop_boxes(torch.tensor([[10, 1000]]), (0.9, 1.0))
    assert thin.tolist() == [[0.0, 493.0, 10.0, 13.0]]


def test_gpu_and_cpu_paths_agree_in_distribution():
    torch.manual_seed(0)
    config = MultiCropConfig(global_size=32, local_size=16, n_local=1)
    image, n = smooth_image(60, 80), 600
    cpu = [MultiCropTransform(config)(image) for _ in range(n)]
    gpu = GpuMultiCrop(config)
    source, hw = gpu.loader_transform()(image)
    dev = gpu(source.expand(n, -1, -1, -1).contiguous(), hw.expand(n, 2))
    for v in range(3):
        a, b = torch.stack([views[v] for views in cpu]), dev[v]
        assert torch.allclose(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)), atol=0.08)
        assert torch.allclose(a.std(dim=(2, 3)).mean(0), b.std(dim=(2, 3)).mean(0), atol=0.06)


def test_gpu_loader_path_through_dataloader(tmp_path):
    corrupt_folder(tmp_path)
    gpu = GpuMultiCrop(SMALL, source_size=40)
    dataset = ImageFolderDataset(tmp_path, transform=gpu.loader_transform())
    loader = DataLoader(dataset, batch_size=5, collate_fn=gpu_multicrop_collate)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(5, 3, 40, 40), (4, 3, 40, 40)]
    assert sum(int((~ok).sum()) for _, _, ok in batches) == 3
    views = gpu(batches[0][0], batches[0][1])
    assert views[0].shape == (5, 3, 64, 64)
    assert isinstance(gpu.loader_transform(), PrepareForGpu)


@pytest.mark.parametrize("device_side", [False, True])
def test_colour_settings_are_honoured(device_side):
    """grayscale_p=1 makes every view grey; jitter and grayscale off keep a flat colour exact
    (only global 2's solarize, p=0.2, may invert the channel above 128)."""
    red = Image.new("RGB", (40, 40), (200, 30, 30))
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]

    def views(**colour) -> list[torch.Tensor]:
        cfg = MultiCropConfig(global_size=32, local_size=16, n_local=2, **colour)
        torch.manual_seed(0)
        if not device_side:
            out = [MultiCropTransform(cfg)(red) for _ in range(8)]
            return [v * std + mean for sample in out for v in sample]
        gpu = GpuMultiCrop(cfg)
        prepared = [gpu.loader_transform()(red) for _ in range(8)]
        images, sizes, _ = gpu_multicrop_collate([(p, True) for p in prepared])
        return [v * std + mean for batch in gpu(images, sizes) for v in batch]

    for v in views(grayscale_p=1.0):
        assert torch.allclose(v[0], v[1], atol=2e-3) and torch.allclose(v[1], v[2], atol=2e-3)
    for v in views(color_jitter_p=0.0, grayscale_p=0.0):
        assert torch.allclose(v[1:], torch.full_like(v[1:], 30 / 255), atol=3e-3)
        r = v[0].mean().item()
        assert min(abs(r - 200 / 255), abs(r - 55 / 255)) < 3e-3, r
    with pytest.raises(SelfPatchError, match="color_jitter"):
        MultiCropConfig(color_jitter=(0.4, 0.4, 0.2, 0.7))
    with pytest.raises(SelfPatchError, match="grayscale_p"):
        MultiCropConfig(grayscale_p=1.5)
