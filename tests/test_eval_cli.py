"""``selfpatch eval ...`` end to end on tiny generated data, and the user-facing errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.cli import register
from selfpatch.evaluate.datasets import choose_data
from selfpatch.evaluate.report import COLUMNS, source_label, unique_labels

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_data import make_davis, make_knn, make_seg  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


FAST = ["--device", "cpu", "--threads", "1", "--short-side", "0", "--seg-image-size", "32",
        "--knn-image-size", "32", "--seg-epochs", "2", "--num-images", "2"]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfpatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    make_davis(root / "DAVIS", num_seqs=2, num_frames=4)
    make_seg(root / "ADEChallengeData2016", num_train=4, num_val=2)
    make_knn(root / "imagenet", num_classes=2, per_class=4)
    return root


def test_eval_all_writes_report_with_every_metric_and_picture(data, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["eval", "all", "--checkpoint", "random:vit_tiny:8", "--checkpoint",
            "random:vit_tiny:16", "--data-root", str(data), "--num-classes", "3",
            "--out", str(out), *FAST]
    assert run_cli(argv) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    header = "| checkpoint | " + " | ".join(h for _, h in COLUMNS) + " |"
    assert header in md
    assert "| checkpoint | J&F | J | F | mIoU | aAcc | mAcc | k-NN top-1 | k-NN top-5 |" in md
    labels = [e["label"] for e in report["checkpoints"]]
    assert labels == ["random-vit_tiny-8", "random-vit_tiny-16"]
    for entry in report["checkpoints"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {entry['label']} |"))
        assert "n/a" not in row
        for key, _ in COLUMNS:
            assert 0 <= entry["metrics"][key] <= 100
        for key in ("J-Recall", "J-Decay", "F-Recall", "F-Decay"):
            assert key in entry["metrics"]
        for name in ("attention", "pca", "propagation"):
            rel = f"{entry['label']}/pictures/{name}.png"
            assert (out / rel).is_file() and f"]({rel})" in md
        davis_dir = out / entry["label"] / "davis"
        assert (davis_dir / "global_results-val.csv").is_file()
        assert (davis_dir / "per-sequence_results-val.csv").is_file()
        assert sorted(p.name for p in (davis_dir / "seq0").iterdir()) == [
            f"{i:05d}.png" for i in range(4)]
        assert entry["results"]["seg"]["settings"]["num_classes"] == 3
    # Protocol settings are recorded.
    assert "top-5, temperature 0.1" in md and "k=20, T=0.07" in md
    assert report["options"]["n_last_frames"] == 7


def _fake_run(run: Path) -> None:
    """A run directory with a training checkpoint as `selfpatch pretrain` writes it."""
    from selfpatch.checkpoint import CHECKPOINT_FORMAT
    from selfpatch.models.backbone import ViTBackbone, make_backbone_spec

    spec = make_backbone_spec("vit_tiny", patch_size=8)
    vit = ViTBackbone(spec).vit
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1,
                "config": {"model": {"arch": "vit_tiny", "patch_size": 8}},
                "backbone_spec": spec.to_dict(),
                "model": {f"teacher.backbone.vit.{k}": v for k, v in vit.state_dict().items()},
                "step": 3, "epoch": 1}, run / "checkpoints" / "last.pt")


def test_single_task_defaults_to_the_run_directory(data, tmp_path, capsys):
    run = tmp_path / "myrun"
    _fake_run(run)
    try:
        code = run_cli(["eval", "davis", "--checkpoint", str(run), "--davis-root",
                        str(data / "DAVIS"), "--sequences", "seq1", *FAST[:4]])
    except SelfPatchError as exc:  # the checkpoint format moved on: say so clearly
        pytest.fail(f"fake training checkpoint no longer loads: {exc}")
    assert code == 0
    out = run / "eval" / "davis"
    result = json.loads((out / "davis.json").read_text())
    assert result["num_sequences"] == 1 and (out / "seq1" / "00003.png").is_file()
    assert "J&F" in capsys.readouterr().out


def test_single_tasks_seg_knn_attention(data, tmp_path):
    base = ["--checkpoint", "random:vit_tiny:8", "--device", "cpu"]
    assert run_cli(["eval", "seg", "--seg-root", str(data / "ADEChallengeData2016"),
                    "--num-classes", "3", "--seg-image-size", "32", "--seg-epochs", "2",
                    "--out", str(tmp_path / "s"), *base]) == 0
    assert json.loads((tmp_path / "s" / "seg.json").read_text())["mIoU"] >= 0
    assert run_cli(["eval", "knn", "--knn-root", str(data / "imagenet"), "--knn-image-size",
                    "32", "--out", str(tmp_path / "k"), *base]) == 0
    assert json.loads((tmp_path / "k" / "knn.json").read_text())["top1"] >= 0
    assert run_cli(["eval", "attention", "--seg-root", str(data / "ADEChallengeData2016"),
                    "--davis-root", str(data / "DAVIS"), "--queries", "0.5,0.5",
                    "--short-side", "0", "--num-images", "2",
                    "--out", str(tmp_path / "a"), *base]) == 0
    assert {p.name for p in (tmp_path / "a").glob("*.png")} == {
        "attention.png", "pca.png", "propagation.png"}


@pytest.mark.parametrize("source", ["does/not/exist", "nope.pt", "nope.safetensors"])
def test_missing_checkpoint_is_one_clear_error(source, data, tmp_path):
    with pytest.raises(SelfPatchError, match=r"does not exist"):
        run_cli(["eval", "all", "--checkpoint", source, "--data-root", str(data),
                 "--out", str(tmp_path / "o")])
    with pytest.raises(SelfPatchError, match=r"does not exist"):
        run_cli(["eval", "knn", "--checkpoint", source, "--knn-root", str(data / "imagenet"),
                 "--out", str(tmp_path / "o")])


def test_data_root_lookup(data, tmp_path):
    assert choose_data("davis", None, data).root == data / "DAVIS"
    assert choose_data("seg", None, data).root == data / "ADEChallengeData2016"
    assert not choose_data("knn", None, data).builtin
    with pytest.raises(SelfPatchError, match=r"--data-root .* DAVIS.*--davis-root"):
        choose_data("davis", None, tmp_path)
    with pytest.raises(SelfPatchError, match=r"--seg-root .* not a directory"):
        choose_data("seg", tmp_path / "missing", None)


def test_bad_task_and_batch_size(data, tmp_path):
    with pytest.raises(SelfPatchError, match=r"unknown evaluation 'foo'"):
        run_cli(["eval", "all", "--checkpoint", "random:vit_tiny:8", "--tasks", "davis,foo",
                 "--data-root", str(data), "--out", str(tmp_path / "o")])
    with pytest.raises(SelfPatchError, match=r"--batch-size must be at least 1, got 0"):
        run_cli(["eval", "knn", "--checkpoint", "random:vit_tiny:8", "--batch-size", "0"])
    with pytest.raises(SelfPatchError, match=r"--fraction must be in \(0, 1\], got 2"):
        run_cli(["eval", "all", "--checkpoint", "random:vit_tiny:8", "--fraction", "2"])


def test_labels():
    assert source_label("random:vit_tiny:8") == "random-vit_tiny-8"
    assert source_label("runs/a/checkpoints/last.pt") == "a-last"
    # fine-tuned models of different runs share file names: the run folder tells them apart
    assert unique_labels(["ft-seg/models/00-random_vit_tiny_16.safetensors",
                          "ft-det/models/00-random_vit_tiny_16.safetensors"]) == [
        "ft-seg-00-random_vit_tiny_16", "ft-det-00-random_vit_tiny_16"]
    assert unique_labels(["x.safetensors", "y/x.safetensors"]) == ["x", "x-2"]


def test_bad_data_root_fails_before_any_work(data, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SelfPatchError, match=r"--knn-root .*missing"):
        run_cli(["eval", "all", "--checkpoint", "random:vit_tiny:8", "--data-root", str(data),
                 "--knn-root", str(tmp_path / "missing"), "--out", str(out)])
    assert not out.exists()


def test_config_table_shows_key_settings_and_differences():
    from selfpatch.evaluate.report import config_table

    entries = [
        {"label": "a", "description": {"step": 5, "config": {
            "method": "dino", "model": {"arch": "vit_tiny"}, "x": {"y": 1, "z": 0}}}},
        {"label": "b", "description": {"step": 7, "config": {
            "method": "dino+selfpatch", "model": {"arch": "vit_tiny"}, "x": {"y": 2, "z": 0}}}},
    ]
    table = "\n".join(config_table(entries))
    assert "| config | a | b |" in table
    assert "| `method` | dino | dino+selfpatch |" in table
    assert "| `model.arch` | vit_tiny | vit_tiny |" in table  # always shown
    assert "| `x.y` | 1 | 2 |" in table and "x.z" not in table  # only differences
    assert config_table([{"label": "r", "description": {"source": "random:vit_tiny"}}]) == [
        "No training config (random or exported weights)."]


def test_eval_all_reuse_scores_only_new_or_changed_checkpoints(data, tmp_path, monkeypatch):
    import os

    import selfpatch.evaluate.report as report_mod

    calls: list[str] = []
    real = report_mod.run_task

    def counting(task, source, *args, **kwargs):
        calls.append(source)
        return real(task, source, *args, **kwargs)

    monkeypatch.setattr(report_mod, "run_task", counting)
    run = tmp_path / "myrun"
    _fake_run(run)
    out = tmp_path / "report"
    base = ["eval", "all", "--data-root", str(data), "--tasks", "knn", "--out", str(out),
            *FAST]

    def evaluate(*sources: str, extra: tuple[str, ...] = ()) -> dict:
        calls.clear()
        argv = [*base, *extra]
        for source in sources:
            argv += ["--checkpoint", source]
        assert run_cli(argv) == 0
        return json.loads((out / "report.json").read_text())

    first = evaluate("random:vit_tiny:8", str(run))
    assert calls == ["random:vit_tiny:8", str(run)]
    # A new source joins: only it is scored; the others keep their earlier results.
    second = evaluate("random:vit_tiny:8", str(run), "random:vit_tiny:16", extra=("--reuse",))
    assert calls == ["random:vit_tiny:16"]
    assert [e["metrics"] for e in second["checkpoints"][:2]] == \
        [e["metrics"] for e in first["checkpoints"]]
    assert [e["label"] for e in second["checkpoints"]] == \
        ["random-vit_tiny-8", "myrun", "random-vit_tiny-16"]
    # The run's checkpoint was rewritten (resumed, re-trained): it is scored again.
    ckpt = run / "checkpoints" / "last.pt"
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    evaluate("random:vit_tiny:8", str(run), extra=("--reuse",))
    assert calls == [str(run)]
    # Other settings measure something else: everything is scored again ...
    evaluate("random:vit_tiny:8", str(run), extra=("--reuse", "--knn-k", "3"))
    assert calls == ["random:vit_tiny:8", str(run)]
    # ... but the thread count only changes the speed.
    evaluate("random:vit_tiny:8", str(run), extra=("--reuse", "--knn-k", "3", "--threads", "2"))
    assert calls == []
    # A report written before an option existed counts as having its default ...
    report = json.loads((out / "report.json").read_text())
    del report["options"]["seg_feature_dtype"]
    (out / "report.json").write_text(json.dumps(report))
    evaluate("random:vit_tiny:8", str(run), extra=("--reuse", "--knn-k", "3"))
    assert calls == []
    # ... and another value of it is another setting.
    evaluate("random:vit_tiny:8", str(run),
             extra=("--reuse", "--knn-k", "3", "--seg-feature-dtype", "float16"))
    assert calls == ["random:vit_tiny:8", str(run)]
    # Without --reuse every source is scored.
    evaluate("random:vit_tiny:8", str(run), extra=("--knn-k", "3"))
    assert calls == ["random:vit_tiny:8", str(run)]
    # --reuse with a subset of the grid adds to the report instead of replacing it ...
    evaluate("random:vit_tiny:8", str(run), "random:vit_tiny:16", extra=("--knn-k", "3"))
    subset = evaluate("random:vit_tiny:16", extra=("--reuse", "--knn-k", "3"))
    assert calls == []
    assert [e["label"] for e in subset["checkpoints"]] == \
        ["random-vit_tiny-8", "myrun", "random-vit_tiny-16"]
    # ... but an earlier checkpoint whose file changed since is dropped, not reported stale.
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    subset = evaluate("random:vit_tiny:16", extra=("--reuse", "--knn-k", "3"))
    assert calls == []
    assert [e["label"] for e in subset["checkpoints"]] == \
        ["random-vit_tiny-8", "random-vit_tiny-16"]
