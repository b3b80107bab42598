"""The training checkpoint format, both ways: writing, reading, migrating, taking parts out.

A checkpoint (``checkpoints/last.pt``) is a plain dict saved with ``torch.save`` and read with
``weights_only=True`` (no code can run on load)::

    format          "selfpatch-train"
    version         2 (1: before the SelfPatch objective became a sub-module, see _migrate)
    config          Config.to_dict() of the run
    backbone_spec   BackboneSpec.to_dict() (timm name + kwargs) to rebuild the backbone
    model           TeacherStudent.state_dict(): student.*, teacher.*, objective.*, selfpatch.*
    optimizer, scaler, step, epoch, world_size, rng (one entry per process)

It lives at the package's base (not in ``train/``) because both training (resume,
``model.init_from``) and the model loaders (evaluation, export) read it; nothing here imports
a component.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.io import atomic_write

CHECKPOINT_FORMAT = "selfpatch-train"
CHECKPOINT_VERSION = 2


# ----------------------------------------------------------------------------- writing
def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous checkpoint intact.
    """
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_training_checkpoint(path: str | Path, *, config: dict, backbone_spec: dict,
                             model: dict, optimizer: dict, scaler: dict, step: int, epoch: int,
                             world_size: int, rng: list) -> Path:
    """Write a training checkpoint (the format in the module doc) atomically."""
    return atomic_save({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config,
        "backbone_spec": backbone_spec, "model": model, "optimizer": optimizer,
        "scaler": scaler, "step": step, "epoch": epoch, "world_size": world_size, "rng": rng,
    }, path)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors/plain types (weights_only-safe)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(
            np.random.get_state()[1].astype(np.uint32).tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    version, internal, gauss = ast.literal_eval(state["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- reading
def resolve_checkpoint_path(source: str | Path) -> Path:
    """Map a run directory or file path to the checkpoint file; raise if it does not exist."""
    path = Path(source)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.is_file():
            raise SelfPatchError(
                f"{path} is a directory without checkpoints/last.pt; pass a run directory "
                "written by `selfpatch pretrain`, a .pt checkpoint or a .safetensors export"
            )
        return candidate
    if not path.is_file():
        raise SelfPatchError(f"checkpoint {path} does not exist; check the path")
    return path


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``), check its format and bring
    an older version up to :data:`CHECKPOINT_VERSION`."""
    path = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SelfPatchError(_unreadable(path, exc)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SelfPatchError(
            f"{path} is not a selfpatch training checkpoint (no format={CHECKPOINT_FORMAT!r}); "
            "for timm/safetensors weights use an exported .safetensors file"
        )
    return _migrate(ckpt, path)


def _unreadable(path: Path, exc: Exception) -> str:
    """One line for a checkpoint torch cannot load. Torch's own text is not passed on: it is
    long, and for a refused file it suggests ``weights_only=False``, which would let an
    untrusted file run code."""
    text = str(exc)
    # "Unsupported operand" / "invalid load key": bytes that are no pickle at all (garbage)
    garbage = "Unsupported operand" in text or "invalid load key" in text
    if ("Weights only load failed" in text or "weights_only" in text) and not garbage:
        return (f"{path} holds objects other than tensors and plain values, so it was refused "
                "(loading it could run code); a checkpoint from `selfpatch pretrain` never "
                "does: use another file")
    size = path.stat().st_size if path.exists() else 0
    return (f"cannot read checkpoint {path} ({size} bytes): it is truncated or not a torch "
            "file (e.g. a copy or write that did not finish); use another checkpoint, such as "
            "a kept checkpoints/epochNNNN.pt")


def _migrate(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """Version 1 -> 2: the patch loss's centre moved from ``patch_loss.center`` to
    ``selfpatch.patch_loss.center`` (the SelfPatch objective became one sub-module)."""
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise SelfPatchError(
            f"{path} is a checkpoint of format version {version}, newer than this selfpatch "
            f"reads ({CHECKPOINT_VERSION}); upgrade selfpatch to load it")
    if version == 1 and isinstance(ckpt.get("model"), dict):
        renamed = {"patch_loss.center": "selfpatch.patch_loss.center"}
        ckpt["model"] = {renamed.get(k, k): v for k, v in ckpt["model"].items()}
    ckpt["version"] = CHECKPOINT_VERSION
    return ckpt


def module_state(ckpt: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``ckpt["model"]`` under ``prefix`` (e.g. ``teacher.aggregator.``), with
    the prefix removed: a state dict for that sub-module."""
    return {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}


def backbone_state(ckpt: dict[str, Any], which: str = "teacher") -> dict[str, torch.Tensor]:
    """timm-keyed backbone state dict of the student or teacher."""
    return module_state(ckpt, f"{which}.backbone.vit.")


def aggregator_settings(ckpt: dict[str, Any]) -> tuple[str, int] | None:
    """``(kind, depth)`` of the aggregation module ``h`` that formed the run's image
    representation, or ``None`` when the [CLS] token did (no SelfPatch, or SelfPatch with
    ``selfpatch.image_representation=cls``)."""
    config = ckpt.get("config", {})
    if not str(config.get("method", "")).endswith("+selfpatch"):
        return None
    sp = config.get("selfpatch", {})
    if sp.get("image_representation", "aggregation") == "cls":
        return None
    return str(sp.get("aggregation", "attention")), int(sp.get("aggregation_depth", 2))
