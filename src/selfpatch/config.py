"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides.

``load_config("cpu-quick", ["optim.epochs=3", "selfpatch.k=2"])`` reads
``configs/cpu-quick.yaml`` (or any YAML path), applies the overrides and validates. Every key
is ``section.field``; a misspelt key is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from selfpatch.errors import SelfPatchError
from selfpatch.runtime import PRECISIONS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
METHODS = ("dino", "dino+selfpatch", "mocov3", "mocov3+selfpatch", "moby", "moby+selfpatch")


@dataclass
class ModelConfig:
    """Backbone. ``arch``: vit_tiny / vit_small / vit_base, a timm ``vit_*`` name or test_vit."""

    arch: str = "vit_tiny"
    patch_size: int = 16  # 0 keeps the timm architecture's own patch size
    drop_path: float = 0.1  # student only (the teacher runs in eval mode)
    init_from: str = ""  # start from a run dir / .pt checkpoint / .safetensors export
    # default | reference: reproduce the authors' step exactly (docs/method.md, fidelity table)
    fidelity: str = "default"


#: ``selfpatch.image_representation`` values: h over all patch tokens (the paper) or [CLS].
IMAGE_REPRESENTATIONS = ("aggregation", "cls")


@dataclass
class SelfPatchConfig:
    """Patch-level objective (paper Sec. 2.2)."""

    neighbourhood: str = "3x3"  # 3x3 | 5x5 | all
    border: str = "valid"  # valid (mask missing neighbours) | wrap (reference behaviour)
    k: int = 4  # positives per patch
    aggregation: str = "attention"  # attention (CaiT class-attention) | mean (ablation)
    aggregation_depth: int = 2
    # What the image-level loss sees: `aggregation` = h over all patch tokens (the paper, Eq. 4);
    # `cls` = the backbone's own [CLS] token, h serving only the patch targets (DINO plus the
    # patch loss). `cls` is a deviation from the paper (docs/method.md) and needs
    # aggregation=mean: only the image loss trains an attention h, which would stay random.
    image_representation: str = "aggregation"
    out_dim: int = 4096  # g' prototypes; g' takes MLP widths, norm, student temp from dino.*
    loss_weight: float = 0.1  # lambda
    center_momentum: float = 0.9  # the patch loss's own centre
    # Teacher temperature of the patch targets; 0 = dino.teacher_temp's schedule (the paper,
    # one temperature for both heads). A fixed value (no warm-up) lets the image head be
    # sharpened without making the patch targets one-hot (on the built-in data that kept them
    # soft but did not move the probe: docs/results.md, "A teacher temperature of its own").
    teacher_temp: float = 0.0
    local_crops: bool = True  # apply the patch loss to local crops too (as the reference)
    # Contrastive patch loss with other images' y as negatives (the paper's MoBY variant).
    negatives: bool = False
    negative_temperature: float = 0.2


@dataclass
class DINOConfig:
    """Image-level DINO objective and teacher (DINO's defaults)."""

    out_dim: int = 65536  # g prototypes
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    head_bn: bool = False  # BatchNorm in the heads' MLPs (DINO's --use_bn_in_head)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    center_views: str = "global"  # global (DINO) | all (reference SelfPatch code)
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    freeze_last_layer_epochs: int = 1


@dataclass
class MoCoConfig:
    """Image-level MoCo-v3 objective (``method=mocov3[+selfpatch]``; MoCo-v3's ViT defaults)."""

    dim: int = 256  # projector / predictor output
    hidden_dim: int = 4096  # projector hidden width
    pred_hidden_dim: int = 4096  # predictor hidden width
    temperature: float = 0.2
    momentum: float = 0.99  # EMA momentum, cosine to 1 (dino.momentum_teacher is DINO's)


@dataclass
class MoBYConfig:
    """Image-level MoBY objective (``method=moby[+selfpatch]``; MoBY's defaults)."""

    dim: int = 256  # projector / predictor output
    hidden_dim: int = 4096  # projector / predictor hidden width
    queue_size: int = 4096  # negatives per queue (one queue per global view)
    temperature: float = 0.2
    momentum: float = 0.99  # EMA momentum, cosine to 1


@dataclass
class DataConfig:
    """Images and multi-crop views. ``path: builtin`` uses the built-in fashion-scenes set."""

    path: str = "builtin"
    global_size: int = 224
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.25)
    n_local: int = 8
    num_workers: int = 2
    pin_memory: bool = True
    builtin_n_pretrain: int = 20000  # scenes generated for path=builtin
    builtin_version: int = 2  # built-in data version for path=builtin (1 = first release)
    # What path=builtin pre-trains on: "scenes" (multi-object scenes, builtin_n_pretrain of
    # them) or "objects" (one object per image, the k-NN renderer's train split from
    # Fashion-MNIST train photos: builtin_n_objects in all, class-balanced; docs/data.md).
    builtin_images: str = "scenes"
    builtin_n_objects: int = 16000
    # Keep only these top-level folders of the image folder (e.g. classes of an ImageFolder
    # layout); empty = all. Applied before limit_images.
    folders: list[str] = field(default_factory=list)
    limit_images: int = 0  # the first N images in sorted order (0 = all); warns if folders drop
    # DINO's colour augmentation by default; stronger settings suit data where colour
    # identifies an image but not its objects (tried on the built-in data: docs/results.md).
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    # Loader only decodes + resizes; crops and colour run batched on the training device
    # (data.transforms.GpuMultiCrop), seeded per (run.seed, step, rank).
    gpu_augment: bool = False


@dataclass
class OptimConfig:
    """AdamW with DINO's schedules. ``batch_size`` is per device."""

    epochs: int = 100
    batch_size: int = 64
    base_lr: float = 5e-4  # lr = base_lr * total_batch / 256
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables
    max_steps: int = 0  # stop after this many steps (0 = run all epochs)


@dataclass
class RunConfig:
    """Where and how the run executes."""

    output_dir: str = "runs/{name}"
    name: str = "{preset}-{method}"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 on GPUs that have it (else fp16), on CPUs only where bf16 is native and
    # measured faster than fp32 (selfpatch.runtime); fp32 | bf16 | fp16 force one.
    precision: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = one per usable core (selfpatch.runtime)
    compile: bool = False
    log_every: int = 10  # steps between metric lines (and the only host syncs)
    save_every: int = 1  # epochs between `last` checkpoints
    save_every_steps: int = 0  # also save every N steps (0 = off)
    keep_every: int = 0  # epochs between kept snapshots checkpoints/epochNNNN.pt (0 = off)
    tensorboard: bool = False
    deterministic: bool = False
    progress: bool = True
    # keys a resumed run may change on purpose (e.g. [optim.epochs] to train longer); any
    # other change that alters the model or the schedule is refused on --resume
    allow_changes: list[str] = field(default_factory=list)


# Keys that never alter the model, the data order or the schedule: a resumed run may change
# them freely (where it runs, how it logs and saves, how the data is fed).
RESUME_FREE_KEYS = frozenset({
    "preset", "model.init_from", "data.path", "data.num_workers", "data.pin_memory",
    "optim.max_steps", "run.output_dir", "run.name", "run.device", "run.precision",
    "run.threads", "run.compile", "run.log_every", "run.save_every", "run.save_every_steps",
    "run.keep_every", "run.tensorboard", "run.deterministic", "run.progress",
    "run.allow_changes"})


def resume_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Keys whose value differs between a checkpoint's config and ``cfg`` and that a resumed
    run may not change (neither free nor listed in ``run.allow_changes``). A key the saved
    config lacks (added to this project after the run started) counts as its default, which
    is what the run used."""
    old = {**flatten_dict(Config().to_dict()), **flatten_dict(saved)}
    new = flatten_dict(cfg.to_dict())
    allowed = RESUME_FREE_KEYS | set(cfg.run.allow_changes)
    return sorted(k for k in old.keys() | new.keys()
                  if k not in allowed and old.get(k) != new.get(k))


@dataclass
class Config:
    """The whole run. ``method``: ``dino``, ``mocov3``, ``moby``, each optionally with
    ``+selfpatch``."""

    method: str = "dino+selfpatch"
    preset: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    selfpatch: SelfPatchConfig = field(default_factory=SelfPatchConfig)
    dino: DINOConfig = field(default_factory=DINOConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    moby: MoBYConfig = field(default_factory=MoBYConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_selfpatch(self) -> bool:
        return self.method.endswith("+selfpatch")

    @property
    def image_objective(self) -> str:
        return self.method.split("+")[0]


def valid_keys(cfg: Config | None = None) -> list[str]:
    """All ``section.field`` keys (plus the top-level scalars)."""
    cfg = cfg or Config()
    keys = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in fields(value)]
        else:
            keys.append(f.name)
    return keys


def _unknown_key(key: str, cfg: Config) -> SelfPatchError:
    keys = valid_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return SelfPatchError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(keys)}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's type, with a one-line error on failure."""
    try:
        if get_origin(hint) is tuple:
            items = value
            if isinstance(value, str):  # "0.25,1.0" or "[0.25, 1.0]" from the command line
                items = yaml.safe_load(value if value.lstrip().startswith("[") else f"[{value}]")
            types = get_args(hint)
            return tuple(_coerce(v, t, key) for v, t in zip(items, types, strict=True))
        if get_origin(hint) is list:  # list[str]: "[a, b]", "a,b" or a YAML list
            items = value
            if isinstance(value, str):
                items = yaml.safe_load(value if value.lstrip().startswith("[") else f"[{value}]")
            if not isinstance(items, list):
                raise ValueError(value)
            (item_type,) = get_args(hint)
            return [_coerce(v, item_type, key) for v in items]
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return "" if value is None else str(value)
    except (ValueError, TypeError) as exc:
        name = getattr(hint, "__name__", str(hint))
        raise SelfPatchError(f"config key {key}={value!r} is not a valid {name}") from exc
    return value


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    target: Any = cfg
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise _unknown_key(key, cfg)
        target = getattr(target, part)
    last = parts[-1]
    if not dataclasses.is_dataclass(target) or last not in {f.name for f in fields(target)}:
        raise _unknown_key(key, cfg)
    if dataclasses.is_dataclass(getattr(target, last)):
        raise SelfPatchError(f"config key {key!r} is a section; set its fields, e.g. {key}.<field>")
    hint = get_type_hints(type(target))[last]
    setattr(target, last, _coerce(value, hint, key))


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}`` (the config's dotted keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def preset_names() -> list[str]:
    """Names of the YAML presets shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _preset_path(preset: str) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SelfPatchError(f"config file {path} does not exist")
        return path
    path = CONFIG_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise SelfPatchError(
            f"unknown preset {preset!r}; choose one of {preset_names()} or pass a .yaml path")
    return path


def _preset_values(preset: str, chain: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any]]:
    """Flat ``{key: value}`` of a preset file, after the values of its ``base:`` preset."""
    path = _preset_path(preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        msg = f"config file {path} is not valid YAML: {exc}".splitlines()[0]
        raise SelfPatchError(msg) from exc
    if not isinstance(data, dict):
        raise SelfPatchError(f"config file {path} must hold a mapping of sections")
    values: dict[str, Any] = {}
    base = data.pop("base", None)
    if base is not None:
        base = str(base)
        local = path.parent / base
        if local.suffix in (".yaml", ".yml") and local.is_file():
            base = str(local)  # a file next to this one
        if base in chain or str(path) in chain:
            raise SelfPatchError(f"config file {path}: base {base!r} includes itself")
        values.update(_preset_values(base, chain + (str(path),))[1])
    values.update(flatten_dict(data))
    return path, values


# What `model.fidelity=reference` implies besides the code paths it switches (the authors'
# choices where this project's defaults differ; docs/method.md).
REFERENCE_IMPLIES: dict[str, Any] = {"selfpatch.border": "wrap", "dino.center_views": "all"}


def load_config(preset: str | None = "cpu-quick", overrides: list[str] | None = None) -> Config:
    """Preset (name or YAML path) + ``key=value`` overrides -> validated :class:`Config`.

    A preset may start from another with a top-level ``base: <preset name or YAML file>``;
    its own values then replace the base's, key by key. ``model.fidelity=reference`` sets
    the keys in :data:`REFERENCE_IMPLIES` (over the preset's values; a conflicting
    override is an error).
    """
    cfg = Config()
    if preset:
        path, values = _preset_values(preset)
        for key, value in values.items():
            _set(cfg, key, value)
        cfg.preset = cfg.preset or path.stem
    for item in overrides or []:
        if "=" not in item:
            raise SelfPatchError(f"override {item!r} must look like key=value, e.g. optim.epochs=5")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), yaml.safe_load(value) if value.strip() else "")
    if cfg.model.fidelity == "reference":
        given = {item.split("=", 1)[0].strip() for item in overrides or []}
        for key, value in REFERENCE_IMPLIES.items():
            section, name = key.split(".")
            current = getattr(getattr(cfg, section), name)
            if key in given and current != value:
                raise SelfPatchError(f"config key {key}={current!r} contradicts "
                                     f"model.fidelity=reference, which uses {key}={value}; "
                                     "drop one of the two")
            setattr(getattr(cfg, section), name, value)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. from a checkpoint)."""
    cfg = Config()
    for key, value in flatten_dict(data).items():
        _set(cfg, key, value)
    return cfg


# Numeric ranges: key -> (low, high or None, low excluded, high excluded).
RANGES: dict[str, tuple[float, float | None, bool, bool]] = {
    "model.patch_size": (0, None, False, False),  # 0 = the architecture's own
    "model.drop_path": (0.0, 1.0, False, True),
    "selfpatch.k": (1, None, False, False),
    "selfpatch.aggregation_depth": (1, None, False, False),
    "selfpatch.out_dim": (1, None, False, False),
    "selfpatch.loss_weight": (0.0, None, False, False),
    "selfpatch.center_momentum": (0.0, 1.0, False, False),
    "selfpatch.negative_temperature": (0.0, None, True, False),
    "selfpatch.teacher_temp": (0.0, None, False, False),  # 0 = dino's
    "dino.out_dim": (1, None, False, False),
    "dino.hidden_dim": (1, None, False, False),
    "dino.bottleneck_dim": (1, None, False, False),
    "dino.student_temp": (0.0, None, True, False),
    "dino.teacher_temp": (0.0, None, True, False),
    "dino.warmup_teacher_temp": (0.0, None, True, False),
    "dino.warmup_teacher_temp_epochs": (0, None, False, False),
    "dino.center_momentum": (0.0, 1.0, False, False),
    "dino.momentum_teacher": (0.0, 1.0, False, False),
    "dino.momentum_teacher_end": (0.0, 1.0, False, False),
    "dino.freeze_last_layer_epochs": (0, None, False, False),
    "moco.dim": (1, None, False, False),
    "moco.hidden_dim": (1, None, False, False),
    "moco.pred_hidden_dim": (1, None, False, False),
    "moco.temperature": (0.0, None, True, False),
    "moco.momentum": (0.0, 1.0, False, False),
    "moby.dim": (1, None, False, False),
    "moby.hidden_dim": (1, None, False, False),
    "moby.queue_size": (1, None, False, False),
    "moby.temperature": (0.0, None, True, False),
    "moby.momentum": (0.0, 1.0, False, False),
    "data.global_size": (1, None, False, False),
    "data.local_size": (1, None, False, False),
    "data.n_local": (0, None, False, False),
    "data.num_workers": (0, None, False, False),
    "data.builtin_n_pretrain": (1, None, False, False),
    "data.builtin_n_objects": (10, None, False, False),
    "data.limit_images": (0, None, False, False),
    "optim.epochs": (1, None, False, False),
    "optim.batch_size": (1, None, False, False),
    "optim.base_lr": (0.0, None, True, False),
    "optim.min_lr": (0.0, None, False, False),
    "optim.warmup_epochs": (0, None, False, False),
    "optim.weight_decay": (0.0, None, False, False),
    "optim.weight_decay_end": (0.0, None, False, False),
    "optim.clip_grad": (0.0, None, False, False),
    "optim.max_steps": (0, None, False, False),
    "run.seed": (0, 2**32 - 1, False, False),  # numpy seeds are 32-bit
    "run.threads": (0, None, False, False),
    "run.log_every": (1, None, False, False),
    "run.save_every": (1, None, False, False),
    "run.save_every_steps": (0, None, False, False),
    "run.keep_every": (0, None, False, False),
}


def _describe_range(key: str) -> str:
    lo, hi, lo_open, hi_open = RANGES[key]
    low = f"{'>' if lo_open else '>='} {lo}"
    return low if hi is None else f"{low} and {'<' if hi_open else '<='} {hi}"


def validate(cfg: Config) -> None:
    """Check values that a type alone cannot; raise one clear line per problem."""
    def bad(key: str, why: str) -> SelfPatchError:
        return SelfPatchError(f"config key {key}: {why}")

    if cfg.method not in METHODS:
        raise bad("method", f"{cfg.method!r} is not one of {METHODS}")
    flat = flatten_dict(cfg.to_dict())
    for key, (lo, hi, lo_open, hi_open) in RANGES.items():
        value = flat[key]
        if (value < lo or (lo_open and value == lo)) or (
                hi is not None and (value > hi or (hi_open and value == hi))):
            raise bad(key, f"{value!r} is out of range: must be {_describe_range(key)}")
    # Crop sizes, scales, view counts and colour settings alone are checked by MultiCropConfig
    # (train.factory.check_buildable); here only what relates two sections.
    p = cfg.model.patch_size
    for key, size in (("data.global_size", cfg.data.global_size),
                      ("data.local_size", cfg.data.local_size)):
        if p and size > 0 and size % p:
            raise bad(key, f"crop size {size} is not a multiple of model.patch_size={p}; "
                      f"use a multiple of {p}")
    if cfg.data.builtin_version not in (1, 2):
        raise bad("data.builtin_version", f"{cfg.data.builtin_version} is not a built-in data "
                  "version; use 2 (default) or 1 (the first release)")
    if cfg.data.builtin_images not in ("scenes", "objects"):
        raise bad("data.builtin_images", f"{cfg.data.builtin_images!r} is not one of scenes, "
                  "objects")
    if len(set(cfg.data.folders)) != len(cfg.data.folders):
        raise bad("data.folders", f"{cfg.data.folders} names a folder twice")
    if cfg.run.precision not in PRECISIONS:
        raise bad("run.precision", f"{cfg.run.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.dino.center_views not in ("global", "all"):
        raise bad("dino.center_views", "must be global or all")
    if cfg.model.fidelity not in ("default", "reference"):
        raise bad("model.fidelity", f"{cfg.model.fidelity!r} is not one of default, reference")
    if cfg.model.fidelity == "reference":
        for key, value in REFERENCE_IMPLIES.items():
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name) != value:
                raise bad(key, f"model.fidelity=reference needs {key}={value}")
    if cfg.uses_selfpatch:
        # Whether k fits each grid's neighbourhood is checked where SelfPatch is built
        # (train.factory.check_buildable, called before any data or weights are touched).
        if cfg.selfpatch.aggregation not in ("attention", "mean"):
            raise bad("selfpatch.aggregation", "must be attention or mean")
        if cfg.selfpatch.image_representation not in IMAGE_REPRESENTATIONS:
            raise bad("selfpatch.image_representation",
                      f"must be one of {', '.join(IMAGE_REPRESENTATIONS)}")
        if cfg.selfpatch.image_representation == "cls" and cfg.selfpatch.aggregation != "mean":
            raise bad("selfpatch.image_representation",
                      "cls needs selfpatch.aggregation=mean: only the image loss trains an "
                      "attention h (the patch targets carry no gradient), so it would stay random")
        if cfg.selfpatch.image_representation == "cls" and cfg.model.arch.startswith("swin"):
            raise bad("selfpatch.image_representation",
                      "cls needs a backbone with a [CLS] token; Swin has none (use aggregation)")
        if cfg.selfpatch.image_representation == "cls" and cfg.model.fidelity == "reference":
            raise bad("selfpatch.image_representation",
                      "model.fidelity=reference reproduces the authors' step: use aggregation")
        if p:
            with_local = cfg.data.n_local and cfg.selfpatch.local_crops
            sizes = [cfg.data.global_size] + ([cfg.data.local_size] if with_local else [])
            for size in sizes:
                g = size // p
                if g < 2:
                    raise bad("data.global_size" if size == cfg.data.global_size else
                              "data.local_size", f"{size}px crops give a {g}x{g} patch grid; "
                              "SelfPatch needs at least 2x2 patches (larger crops or patches)")
