"""End-to-end pre-training: loss goes down, exact resume, export through timm, bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from selfpatch.config import load_config
from selfpatch.errors import SelfPatchError
from selfpatch.models.export import export_backbone
from selfpatch.models.loading import load_backbone
from selfpatch.train.trainer import pretrain

TINY = [
    "model.arch=test_vit", "model.patch_size=8", "data.global_size=32", "data.local_size=16",
    "data.n_local=2", "data.num_workers=0", "dino.out_dim=128", "dino.hidden_dim=64",
    "dino.bottleneck_dim=32", "selfpatch.out_dim=64", "optim.batch_size=8",
    "optim.warmup_epochs=1", "run.progress=false", "run.log_every=1", "run.threads=1",
]


def make_images(folder: Path, n: int = 32, size: int = 40, seed: int = 0) -> Path:
    """Blobs of colour on noise: enough structure for the loss to move."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3)).astype(np.float32)
        for _ in range(2):
            cy, cx, r = rng.integers(5, size - 5, 2).tolist() + [int(rng.integers(4, 12))]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(80, 255, 3)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("data") / "imgs")


def cfg_for(images: Path, out: Path, *extra: str):
    return load_config("cpu-quick", TINY + [f"data.path={images}", f"run.output_dir={out}",
                                            *extra])


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def fixed_views(images: Path, cfg) -> list[torch.Tensor]:
    from selfpatch.data.folder import ImageFolderDataset
    from selfpatch.data.seeded import SeededViews
    from selfpatch.data.transforms import MultiCropConfig, MultiCropTransform, multicrop_collate

    d = cfg.data
    transform = MultiCropTransform(MultiCropConfig(d.global_size, tuple(d.global_scale),
                                                   d.local_size, tuple(d.local_scale), d.n_local))
    data = SeededViews(ImageFolderDataset(images), transform, seed=123)
    return multicrop_collate([data[(0, i)] for i in range(16)])[0]


def test_short_run_learns_and_writes_run_dir(images, tmp_path):
    """A few dozen steps lower the loss against the trained teacher's targets.

    DINO's logged loss is not monotone early on (the centre first removes the shared output
    bias, so the logged value rises towards log K); the fair check of optimisation is the
    same loss, same targets (trained teacher and centres), initial vs trained student.
    """
    from selfpatch.train.factory import build_teacher_student

    cfg = cfg_for(images, tmp_path / "run", "optim.epochs=8", "model.drop_path=0",
                  "optim.base_lr=0.05", "run.keep_every=3")
    run = pretrain(cfg)
    rows = read_metrics(run)
    assert len(rows) == 32  # 32 images / batch 8 = 4 steps x 8 epochs
    assert all(np.isfinite(r["loss"]) for r in rows)
    for key in ("image_loss", "patch_loss", "lr", "wd", "momentum", "img_per_s",
                "teacher_patch_entropy", "valid_neighbour_share", "patch_token_rank"):
        assert key in rows[-1]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    # kept snapshots after epochs 3 and 6 (4 steps each), loadable as evaluation sources
    snapshots = sorted(p.name for p in (run / "checkpoints").glob("epoch*.pt"))
    assert snapshots == ["epoch0003.pt", "epoch0006.pt"]
    snap = torch.load(run / "checkpoints" / "epoch0006.pt", weights_only=True)
    assert snap["step"] == 24
    load_backbone(run / "checkpoints" / "epoch0006.pt")
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"

    torch.manual_seed(cfg.run.seed)
    initial_student = build_teacher_student(cfg).student.state_dict()  # the run's start
    trained = build_teacher_student(cfg)
    trained.load_state_dict(torch.load(run / "checkpoints" / "last.pt",
                                       weights_only=True)["model"])
    views = fixed_views(images, cfg)
    losses = {}
    for name in ("trained", "initial"):
        model = copy.deepcopy(trained).eval()
        if name == "initial":
            model.student.load_state_dict(initial_student)
        with torch.no_grad():
            losses[name] = float(model(views, 0.04)[0])
    assert losses["trained"] < losses["initial"] - 0.1, losses


@pytest.mark.parametrize("method", ["dino+selfpatch", "dino"])
def test_resume_is_exact(images, tmp_path, method):
    """Interrupted at step 5 (mid-epoch) and resumed == uninterrupted, bit for bit."""
    extra = ["optim.epochs=3", f"method={method}"]
    full = pretrain(cfg_for(images, tmp_path / "full", *extra))
    part_cfg = cfg_for(images, tmp_path / "part", *extra, "optim.max_steps=5")
    part = pretrain(part_cfg)
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
    pretrain(cfg_for(images, tmp_path / "part", *extra), resume=True)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    losses_full = [r["loss"] for r in read_metrics(full)]
    losses_part = [r["loss"] for r in read_metrics(part)]
    assert losses_full == losses_part


def test_export_loads_with_plain_timm(images, tmp_path):
    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1"))
    path, spec = export_backbone(run)
    model = timm.create_model(spec.timm_name, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)), **spec.timm_kwargs)
    model.eval()
    ours = load_backbone(run)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = ours(x)
        got = model.forward_features(x)[:, model.num_prefix_tokens:]
    assert got.shape == (2, 6 * 8, ours.embed_dim)
    torch.testing.assert_close(got, expected)
    # ... and equals the teacher inside the checkpoint, not the student
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    key = "pos_embed"
    torch.testing.assert_close(model.state_dict()[key],
                               ckpt["model"][f"teacher.backbone.vit.{key}"])


def test_cli_reports_one_line_errors(tmp_path, capsys):
    """Bad input: one line, exit status 2, no traceback. The first case goes through the real
    command line (a fresh interpreter: nothing else on stderr); the others through ``main``
    in-process, the same code path minus the interpreter start (seconds each on slow CPUs)."""
    from selfpatch.cli import main as cli_main

    empty = tmp_path / "empty"
    empty.mkdir()
    out = f"run.output_dir={tmp_path / 'r'}"
    proc = subprocess.run([sys.executable, "-m", "selfpatch", "pretrain",
                           f"data.path={tmp_path / 'missing'}", out],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], proc.stderr
    cases = [
        ([f"data.path={empty}"], "no image files"),
        (["data.global_size=60"], "not a multiple of model.patch_size=16"),
        (["selfpatch.k=9"], "selfpatch.k"),
        (["optim.epochz=3"], "valid keys"),
    ]
    for args, needle in cases:
        assert cli_main(["pretrain", *args, out]) == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, err)
        assert "Traceback" not in err


def test_run_intervals_are_validated():
    for args, key in ((["run.keep_every=-1"], "run.keep_every"), (["run.log_every=0"],
                      "run.log_every"), (["run.save_every=0"], "run.save_every")):
        with pytest.raises(SelfPatchError, match=key):
            load_config("cpu-quick", args)
    assert load_config("cpu-long").run.keep_every == 2


def test_every_shipped_preset_validates():
    from selfpatch.config import preset_names

    names = preset_names()
    assert {"cpu-quick", "cpu-long", "builtin-gpu", "coco-ablation-vit-ti16",
            "paper-imagenet-vit-s16"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.preset == name and cfg.optim.epochs >= 1


def test_a_preset_can_start_from_a_base(tmp_path):
    demo, quick = load_config("cpu-demo"), load_config("cpu-quick")
    assert (demo.optim.batch_size, demo.optim.epochs, demo.data.limit_images) == (16, 2, 1024)
    differ = {k for k, v in demo.to_dict().items() if v != quick.to_dict()[k]}
    assert differ == {"preset", "data", "optim", "run"}  # the rest is cpu-quick's
    assert demo.model == quick.model and demo.dino == quick.dino
    # A file next to another file, overriding one key of it; then a cycle.
    (tmp_path / "a.yaml").write_text("base: cpu-quick\noptim: {epochs: 7}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {batch_size: 4}\n")
    b = load_config(str(tmp_path / "b.yaml"))
    assert (b.optim.epochs, b.optim.batch_size, b.optim.base_lr) == (7, 4, quick.optim.base_lr)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(SelfPatchError, match="includes itself"):
        load_config(str(tmp_path / "b.yaml"))
    (tmp_path / "c.yaml").write_text("base: no-such-preset\n")
    with pytest.raises(SelfPatchError, match="unknown preset 'no-such-preset'"):
        load_config(str(tmp_path / "c.yaml"))


def test_unreadable_images(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not an image")
    (bad / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SelfPatchError, match="could be read"):
        pretrain(cfg_for(bad, tmp_path / "r"))
    # mixed folder: skipped, counted, recorded in environment.json
    mixed = make_images(tmp_path / "mixed", n=16)
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    run = pretrain(cfg_for(mixed, tmp_path / "r2", "optim.epochs=1"))
    assert json.loads((run / "environment.json").read_text())["unreadable_images"] == 1


def test_checkpoint_of_another_architecture(images, tmp_path):
    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1"))
    with pytest.raises(SelfPatchError, match="another architecture"):
        pretrain(cfg_for(images, tmp_path / "r2", "model.arch=vit_small",
                         f"model.init_from={run}"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(images, tmp_path, monkeypatch):
    from selfpatch.methods.teacher_student import TeacherStudent

    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1"))  # 4 good steps
    good = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    forward = TeacherStudent.forward
    calls = {"n": 0}

    def poisoned(self, views, teacher_temp, diagnostics=False):
        loss, stats = forward(self, views, teacher_temp, diagnostics)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), stats

    monkeypatch.setattr(TeacherStudent, "forward", poisoned)
    with pytest.raises(SelfPatchError, match="NaN/inf at step 7"):
        pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=3",
                         "run.allow_changes=[optim.epochs]"), resume=True)
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert after["step"] == good["step"] == 4


def test_version_1_checkpoints_resume_and_evaluate(images, tmp_path):
    """A checkpoint in the first format (patch centre at ``patch_loss.center``) still resumes
    to the same result as the current format, and loads for evaluation; a format from the
    future is refused in one line."""
    from selfpatch.checkpoint import CHECKPOINT_VERSION, load_training_checkpoint
    from selfpatch.models.loading import load_image_embedder

    runs = {}
    for name in ("current", "old"):
        runs[name] = pretrain(cfg_for(images, tmp_path / name, "optim.epochs=1"))
    path = runs["old"] / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["version"] == CHECKPOINT_VERSION == 2
    centre = ckpt["model"].pop("selfpatch.patch_loss.center")
    assert float(centre.abs().sum()) > 0  # a real, moved centre must survive the migration
    ckpt["model"]["patch_loss.center"] = centre
    ckpt["version"] = 1
    torch.save(ckpt, path)
    assert torch.equal(load_training_checkpoint(path)["model"]["selfpatch.patch_loss.center"],
                       centre)
    for name in runs:
        pretrain(cfg_for(images, tmp_path / name, "optim.epochs=2",
                         "run.allow_changes=[optim.epochs]"), resume=True)
    a = torch.load(runs["current"] / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(runs["old"] / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    embedder = load_image_embedder(runs["old"])
    assert embedder.kind == "aggregator"
    ckpt["version"] = 3
    torch.save(ckpt, path)
    with pytest.raises(SelfPatchError, match="format version 3, newer"):
        load_training_checkpoint(path)


def test_limit_images_warns_when_whole_class_folders_are_left_out(tmp_path):
    """`data.limit_images` keeps the first N sorted files: on a class-per-folder layout that can
    drop whole classes (it did, silently, in a session-16 run); the trainer says so."""
    from selfpatch.train.factory import folders_left_out

    root = tmp_path / "train"
    files = [root / "a" / "1.png", root / "a" / "2.png", root / "b" / "1.png",
             root / "c" / "1.png", root / "c" / "2.png"]
    two = folders_left_out(files, 2, root)  # a, a: b and c are gone
    assert "2 of 3 folders" in two and "(b, c)" in two and "first 2 of 5" in two
    assert "1 of 3 folders" in folders_left_out(files, 3, root)  # c is gone
    assert folders_left_out(files, 4, root) == ""  # c keeps one image
    assert folders_left_out(files, 9, root) == ""
    flat = [root / f"{i}.png" for i in range(5)]  # one folder: nothing to leave out
    assert folders_left_out(flat, 2, root) == ""


def test_data_folders_keeps_only_the_named_top_level_folders(tmp_path):
    from selfpatch.train.factory import keep_folders

    root = tmp_path / "train"
    files = [root / "a" / "1.png", root / "b" / "1.png", root / "b" / "2.png",
             root / "c" / "1.png", root / "loose.png"]
    assert keep_folders(files, root, ["c", "a"]) == [files[0], files[3]]  # sorted order kept
    assert keep_folders(files, root, ["b"]) == files[1:3]
    with pytest.raises(SelfPatchError, match=r"data.folders: d, e not found .*: a, b, c$"):
        keep_folders(files, root, ["a", "d", "e"])
    with pytest.raises(SelfPatchError, match=r"data.folders: .* twice"):
        load_config("cpu-quick", ["data.folders=[a,a]"])


def test_data_folders_reaches_the_training_loader(tmp_path):
    from selfpatch.train.distributed import DistInfo
    from selfpatch.train.factory import build_train_data

    for name, seed in (("cls0", 0), ("cls1", 1), ("cls2", 2)):
        make_images(tmp_path / "imgs" / name, n=8, seed=seed)
    cfg = cfg_for(tmp_path / "imgs", tmp_path / "run", "data.folders=[cls2,cls0]")
    data = build_train_data(cfg, DistInfo(), torch.device("cpu"))
    assert len(data.dataset) == 16
    assert {f.parent.name for f in data.dataset.files} == {"cls0", "cls2"}


def test_builtin_objects_resolves_to_the_knn_train_split(tmp_path, monkeypatch):
    """`data.builtin_images=objects` pre-trains on the built-in single-object images: the
    build with `n_knn_train = data.builtin_n_objects`, its `knn/train` folder."""
    import selfpatch.data.builtin as builtin
    from selfpatch.data.builtin.build import data_paths
    from selfpatch.data.builtin.layouts import knn_class_dir
    from selfpatch.train.distributed import DistInfo
    from selfpatch.train.factory import resolve_data_root

    seen = []

    def fake_ensure(spec, progress=True, **_):
        seen.append(spec)
        return data_paths(tmp_path / spec.dir_name())

    monkeypatch.setattr(builtin, "ensure_builtin", fake_ensure)
    cfg = load_config("cpu-long-objects", ["data.builtin_n_objects=200"])
    root = resolve_data_root(cfg, DistInfo())
    assert seen[0].n_knn_train == 200 and seen[0].n_pretrain == cfg.data.builtin_n_pretrain
    assert root == tmp_path / seen[0].dir_name() / "knn" / "train"
    # The preset's folders are the built-in classes 0-4, by the layout's own names.
    assert cfg.data.folders == [knn_class_dir(label) for label in range(5)]
    assert cfg.data.limit_images == 0
    scenes = load_config("cpu-long")
    assert resolve_data_root(scenes, DistInfo()).name == "pretrain"
    assert seen[1].n_knn_train == builtin.BuiltinSpec().n_knn_train
    with pytest.raises(SelfPatchError, match=r"data.builtin_images.*scenes, objects"):
        load_config("cpu-quick", ["data.builtin_images=object"])


def test_cls_image_representation_trains_and_is_what_knn_reads(images, tmp_path):
    """``selfpatch.image_representation=cls`` (a deviation from the paper: DINO's [CLS] for the
    image loss, the mean of the positives for the patch targets) trains, and evaluation reads
    the teacher's [CLS] token, not the mean of its patch tokens. Wrong values are one line."""
    from selfpatch.config import load_config
    from selfpatch.models.loading import load_image_embedder

    run = pretrain(cfg_for(images, tmp_path / "cls", "optim.epochs=1",
                           "selfpatch.aggregation=mean", "selfpatch.image_representation=cls"))
    assert "patch_loss" in read_metrics(run)[-1]
    embedder = load_image_embedder(run)
    assert embedder.kind == "cls"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls, tokens = embedder.backbone.forward_tokens(x)
        assert torch.equal(embedder(x), cls)
        assert not torch.allclose(cls, tokens.mean(dim=1))
    with pytest.raises(SelfPatchError, match="selfpatch.image_representation.*aggregation, cls"):
        load_config("cpu-quick", ["selfpatch.image_representation=token"])
    with pytest.raises(SelfPatchError, match="needs selfpatch.aggregation=mean"):
        load_config("cpu-quick", ["selfpatch.image_representation=cls"])
