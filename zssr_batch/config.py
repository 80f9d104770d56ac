"""Typed, frozen fit settings: defaults, presets, config files, and the config hash.

Defaults are the official ZSSR ``configs.py`` (X2_ONE_JUMP_IDEAL_CONF); every field
carries the reason for its default. A setting is resolved once, in this order:
preset -> config file (YAML or TOML) -> command-line flags, then validated.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

Scale = tuple[float, float]  # (vertical, horizontal) scale factors
ScaleLike = Union[float, Sequence[float]]  # one factor for both axes, or a (vertical, horizontal) pair


# What a scale makes of a size lives here, below every wing: the settings check a scale with it.
def scale_pair(value: ScaleLike, name: str = "scale") -> tuple[float, float]:
    if isinstance(value, (int, float)):
        pair = (float(value), float(value))
    else:
        pair = tuple(float(v) for v in value)  # type: ignore[assignment]
        if len(pair) != 2:
            raise ValueError(f"{name} must be a number or a (vertical, horizontal) pair, got {value!r}")
    if not all(v > 0 and math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return pair  # type: ignore[return-value]


def output_size(in_hw: Sequence[int], scale: ScaleLike) -> tuple[int, int]:
    """``ceil(in * scale)`` per axis, with a guard against float noise (0.5 * 2.0000001), as MATLAB's
    ``imresize`` sizes its output (``engine.resize``)."""
    sv, sh = scale_pair(scale)
    return tuple(max(1, int(math.ceil(n * s - 1e-9))) for n, s in zip(in_hw, (sv, sh)))  # type: ignore[return-value]


def stays(hw: Sequence[int], scale: ScaleLike) -> bool:
    """Whether an image of ``hw`` shrunk by ``scale`` keeps its size: a scale so near 1 that it is
    under a pixel there (x1.0000001 on 128 pixels). A shrink by it makes no low-resolution input
    (``files.degrade``), and a fit to it has nothing to learn: ZSSR's sons are its crops shrunk by it."""
    sv, sh = scale_pair(scale)
    return output_size(hw, (1 / sv, 1 / sh)) == tuple(hw)


def _knob(default: Any, help: str) -> Any:
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class FitConfig:
    # --- what to do ---
    scale: Scale = _knob((2.0, 2.0), "final (vertical, horizontal) scale; '2' or '2,1.5'")
    scale_steps: tuple[Scale, ...] = _knob(
        (), "gradual scales, e.g. '1,1.5;1.5,1;1.5,1.5;1.5,2;2,1.5;2,2'; empty = one jump to --scale")
    # --- network (authors: 8 layers x 64 channels, no bias, residual) ---
    depth: int = _knob(8, "number of 3x3 conv layers")
    width: int = _knob(64, "channels of the hidden layers")
    init_variance: float = _knob(0.1, "weights ~ N(0, init_variance / fan_in); small because of the residual")
    # --- optimisation ---
    learning_rate: float = _knob(1e-3, "initial Adam learning rate")
    lr_schedule: str = _knob("zssr", "'zssr': the authors' slope rule; 'halving': the article's fixed halving")
    min_learning_rate: float = _knob(9e-6, "zssr rule: stop once the rate falls below this (three tenfold cuts)")
    lr_change_ratio: float = _knob(1.5, "zssr rule: cut when -ratio * slope < std(slope)")
    lr_check_every: int = _knob(60, "zssr rule: consider a cut every N steps")
    lr_slope_range: int = _knob(256, "zssr rule: fit the line to the tests of the last N steps")
    test_every: int = _knob(50, "measure the reconstruction error every N steps")
    lr_halvings: int = _knob(5, "halving rule: number of halvings spread over --max-iters (article: 5)")
    max_iters: int = _knob(3000, "training steps at most (per scale step)")
    min_iters: int = _knob(256, "zssr rule: steps between two learning-rate changes at least")
    crop: int = _knob(128, "side of the square father crop (clamped to the image's smaller side)")
    noise_std: float = _knob(0.0, "Gaussian noise std added to sons, on [0, 1] (real images: 0.0125)")
    # --- father augmentation (authors' random_augment) ---
    p_as_is: float = _knob(0.05, "probability of a plain crop")
    p_no_interp: float = _knob(0.45, "probability of a crop with 90-degree rotation / mirror only")
    augment_min_scale: float = _knob(0.5, "affine fathers: smallest scale of the source")
    augment_max_scale: float = _knob(0.0, "affine fathers: largest scale; 0 = the authors' (1, then each step's)")
    scale_diff_sigma: float = _knob(0.25, "affine fathers: std of the vertical/horizontal scale difference")
    shear_sigma: float = _knob(0.1, "affine fathers: std of the shear")
    rotation: str = _knob("any", "'any' angle (affine), 'right' angles only, or 'none' (non-symmetric kernels)")
    # --- inference ---
    ensemble: str = _knob("median", "combine the 8 flips/rotations by 'median' or 'mean'; 'none' = one pass")
    back_projection_iters: tuple[int, ...] = _knob(
        (10,), "back-projection steps per scale step (one value for all, or one per step); 0 = off")
    reinit_each_step: bool = _knob(False, "gradual: start each scale step from a fresh network")
    kernel: str = _knob("", "downscaling kernel: '' for the set's own where the input has one (a "
                            "kernels/X<s>/ folder, or a manifest's kernel column), else bicubic; 'bicubic'; "
                            "a .npy / .mat ('Kernel') file; or 'estimate': each image's own (x2 and x4), "
                            "read from the image before its fit (--kernel-estimator)")
    kernel_estimator: str = _knob("kernelgan", "--kernel estimate: 'kernelgan' (the authors' GAN, trained on the "
                                                "image) or 'recurrence' (a Gaussian as wide as the image's own "
                                                "patches recur, no training)")
    kernel_steps: int = _knob(3000, "--kernel estimate: KernelGAN's training steps (authors: 3000; fewer "
                                    "compress its schedule)")
    kernel_trust_width: float = _knob(0.0, "--kernel estimate, KernelGAN: assume bicubic where the x2 estimate is "
                                           "narrower than this (HR pixels); 0 = always use it")
    kernel_restarts: int = _knob(3, "--kernel estimate: KernelGAN runs an image, each its own seed; the failed "
                                    "ones dropped, the mean of the others used (1: the authors' one run)")
    kernel_trust_recurrence: float = _knob(0.0, "--kernel estimate, KernelGAN: assume bicubic where the image's "
                                                "own patches recur best at a shrink narrower than this (HR "
                                                "pixels): a sharp image, whatever the estimate says; 0 = no check")
    seed: int = _knob(0, "random seed of the weights and the training pairs")

    def __post_init__(self) -> None:
        problems = []
        # An upscaler's factors: 1 on one axis is an anisotropic upscale (2,1); 1 on both is the
        # input again, and under 1 a shrink, which a network trained to upscale cannot do.
        if not all(s >= 1 and math.isfinite(s) for s in self.scale) or max(self.scale) == 1:
            problems.append(f"scale must be at least 1 on each axis and more than 1 on one (an upscale), "
                            f"got {self.scale}")
        elif self.crop > 1 and self.under_a_pixel(self.crop):  # x1.0000001
            c = self.crop
            problems.append(f"scale {self.scale}: a factor of {self.under_a_pixel(c)!r} is under a pixel on the "
                            f"{c}x{c} training crops (shrunk by it, a crop keeps its {c} pixels), so the fit would "
                            f"learn nothing; a factor over 1 must be at least {c}/{c - 1}")
        for st in self.scale_steps:
            if len(st) != 2 or not all(s >= 1 and math.isfinite(s) for s in st):
                problems.append(f"every scale step must be a pair of factors of at least 1, got {st}")
        if self.scale_steps and tuple(self.scale_steps[-1]) != tuple(self.scale):
            problems.append(f"the last scale step {self.scale_steps[-1]} must equal scale {self.scale}")
        n_steps = max(1, len(self.scale_steps))
        if len(self.back_projection_iters) not in (1, n_steps):
            problems.append(f"back_projection_iters needs one value, or one per scale step ({n_steps}), "
                            f"got {self.back_projection_iters}")
        for name in ("depth", "width", "crop", "lr_check_every", "test_every", "lr_halvings"):
            if getattr(self, name) < (2 if name == "depth" else 1):
                problems.append(f"{name} too small: {getattr(self, name)}")
        if self.max_iters < 0 or self.min_iters < 0:
            problems.append("max_iters and min_iters must be >= 0")
        if self.lr_schedule not in ("zssr", "halving"):
            problems.append(f"lr_schedule must be 'zssr' or 'halving', got {self.lr_schedule!r}")
        if self.rotation not in ("any", "right", "none"):
            problems.append(f"rotation must be 'any', 'right' or 'none', got {self.rotation!r}")
        if self.ensemble not in ("median", "mean", "none"):
            problems.append(f"ensemble must be 'median', 'mean' or 'none', got {self.ensemble!r}")
        if not (0 <= self.p_as_is and 0 <= self.p_no_interp and self.p_as_is + self.p_no_interp <= 1):
            problems.append("p_as_is and p_no_interp must be probabilities summing to at most 1")
        if self.kernel == "estimate" and not (self.scale[0] == self.scale[1] and self.scale[0] in (2, 4)):
            problems.append(f"kernel 'estimate' needs scale 2 or 4 (each estimator reads an x2 kernel, or an x4 "
                            f"one), got {self.scale}")
        if self.kernel == "estimate" and len(self.scale_steps) > 1:  # one kernel, for one scale
            problems.append(f"kernel 'estimate' fits in one jump to x2 or x4, not in scale steps "
                            f"({len(self.scale_steps)} given)")
        if self.kernel_trust_recurrence < 0 or not math.isfinite(self.kernel_trust_recurrence):
            problems.append(f"kernel_trust_recurrence must be at least 0, got {self.kernel_trust_recurrence}")
        if self.kernel_estimator not in ESTIMATORS:
            problems.append(f"kernel_estimator must be one of {', '.join(ESTIMATORS)}, got {self.kernel_estimator!r}")
        if self.kernel_steps < 1 or not 1 <= self.kernel_restarts <= MOST_RESTARTS or self.kernel_trust_width < 0:
            problems.append(f"kernel_steps must be at least 1, kernel_restarts from 1 to {MOST_RESTARTS} and "
                            f"kernel_trust_width at least 0, got {self.kernel_steps}, {self.kernel_restarts} and "
                            f"{self.kernel_trust_width}")
        if self.noise_std < 0 or self.learning_rate <= 0:
            problems.append("noise_std must be >= 0 and learning_rate > 0")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def under_a_pixel(self, side: int) -> float | None:
        """A factor over 1 of ``scale`` too small for ``side`` x ``side`` training crops: shrunk by it, a
        crop keeps its size, so the fit has nothing to learn (and the output grows by a rounded-up
        pixel). None where there is none."""
        return next((f for f in self.scale if f > 1 and stays((side, side), f)), None)

    @property
    def steps(self) -> tuple[Scale, ...]:
        """The scale steps the fit walks through (one jump unless gradual)."""
        return tuple(self.scale_steps) or (tuple(self.scale),)  # type: ignore[return-value]

    def bp_iters(self, step: int) -> int:
        bp = self.back_projection_iters
        return bp[0] if len(bp) == 1 else bp[step]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def hash(self) -> str:
        """12 hex digits naming what the output depends on (resume keys on it).

        A kernel file counts by its content, not its name: editing it redoes the images. The
        estimator's settings count only where the kernel is estimated, so that every other
        config keeps the hash it had before they existed.
        """
        return self._hash

    @functools.cached_property
    def _hash(self) -> str:  # computed once per config: a run asks for it once per image
        d = self.to_dict()
        if self.kernel != "estimate":
            for name in ESTIMATOR_FIELDS:
                del d[name]
            if self.kernel and Path(self.kernel).is_file():
                d["kernel"] = hashlib.sha256(Path(self.kernel).read_bytes()).hexdigest()
        elif self.kernel_estimator == "recurrence":  # the others are KernelGAN's: changing them changes nothing
            for name in KERNELGAN_FIELDS:
                del d[name]
        for name, value in ESTIMATOR_NEUTRAL.items():  # added later: where it changes nothing, the old hash
            if d.get(name) == value:
                del d[name]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Each run of the estimator costs an estimate's time (3 already cost more than the fit on a CPU):
# past this many, a typo, not a choice.
MOST_RESTARTS = 16
ESTIMATORS = ("kernelgan", "recurrence")  # --kernel-estimator (``engine.kernel_estimate.estimate_kernel``)
# Of --kernel estimate alone (``hash``)
KERNELGAN_FIELDS = ("kernel_steps", "kernel_trust_width", "kernel_restarts", "kernel_trust_recurrence")
ESTIMATOR_FIELDS = ("kernel_estimator", *KERNELGAN_FIELDS)
# Estimator settings added later, at the value that changes nothing: a run made before they existed
# resumes as done when it is asked for again with that value.
ESTIMATOR_NEUTRAL = {"kernel_restarts": 1, "kernel_trust_recurrence": 0.0, "kernel_estimator": "kernelgan"}

GRADUAL_X2 = ((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0))
# The authors ship no x3 or x4 schedule. These walk x2's six steps, then the same pattern on (its
# anisotropic steps between isotropic ones) to 3, or x2's steps times 2 to 4: the best of the
# natural schedules in benchmarks/schedules.py's CPU screen at a reduced budget (docs/BENCHMARKS.md,
# "x3 and x4 presets"); back-projections rise from 6 to 12 over the steps, as x2's do.
GRADUAL_X3 = GRADUAL_X2 + ((2.0, 3.0), (3.0, 2.0), (3.0, 3.0))
GRADUAL_X4 = GRADUAL_X2 + tuple((2 * a, 2 * b) for a, b in GRADUAL_X2)

# Presets are overrides of the defaults above (the authors' X2_ONE_JUMP_IDEAL_CONF).
PRESETS: dict[str, dict[str, Any]] = {
    # configs.py defaults: one jump, bicubic kernel, 8-way median, 10 back-projections.
    "paper": {},
    # X2_GRADUAL_IDEAL_CONF: six steps, earlier outputs join the fathers (about +0.3 dB, 6x time).
    "gradual-x2": {"scale": (2.0, 2.0), "scale_steps": GRADUAL_X2, "back_projection_iters": (6, 6, 8, 10, 10, 12)},
    "gradual-x3": {"scale": (3.0, 3.0), "scale_steps": GRADUAL_X3,
                   "back_projection_iters": (6, 7, 8, 8, 9, 10, 10, 11, 12)},
    "gradual-x4": {"scale": (4.0, 4.0), "scale_steps": GRADUAL_X4,
                   "back_projection_iters": (6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12)},
    # X2_REAL_CONF: mild noise, no rotations (kernels may be asymmetric), no ensemble, no back-projection.
    # With --kernel estimate (camera photos): KernelGAN's estimates of sharp, bicubic-downscaled images
    # came out 1.5-2.2 px wide where bicubic is 0.85 (7 of 8 over 1.6 with three runs), and fits with
    # such kernels lost 9.5-14 dB to assuming bicubic. Its width does not tell a sharp image from a
    # blurred one; where the image's own patches recur does (``engine.recurrence``: 1.0-1.8 px on 39
    # sharp inputs, 1.8-2.4 on 20 blurred ones): a photo that measures sharp is fitted assuming
    # bicubic (docs/BENCHMARKS.md, "Does the estimate follow the truth?").
    "real": {"ensemble": "none", "back_projection_iters": (0,), "noise_std": 0.0125, "rotation": "none",
             "scale_diff_sigma": 0.0, "shear_sigma": 0.0, "augment_min_scale": 0.75, "kernel_trust_width": 1.6,
             "kernel_trust_recurrence": 1.9},
    # The Keras article: crop 96, 1500 steps, fathers downscaled by [0.4, 0.95] with 8-way flips,
    # fixed halving schedule, no back-projection (noise 30/255 optional via --noise-std 0.1176).
    "article": {"crop": 96, "max_iters": 1500, "lr_schedule": "halving", "p_as_is": 0.0, "p_no_interp": 0.0,
                "augment_min_scale": 0.4, "augment_max_scale": 0.95, "scale_diff_sigma": 0.0,
                "shear_sigma": 0.0, "rotation": "right", "back_projection_iters": (0,)},
    # KernelGAN's ZSSR for estimated kernels (ZSSRforKernelGAN/zssr_configs.py): each image's kernel
    # estimated first; plain crops (no flips, rotations or warps, which would turn an asymmetric
    # kernel), no 8-way ensemble, 2 back-projections. Camera photos: --preset real --kernel estimate
    # (their --real: noise on the sons, no back-projection). The kernel read off each image's patch
    # recurrence, not KernelGAN's: on the blind benchmark's first 3 images at x2 it closed 70% of the
    # gap to the true kernel where three KernelGAN runs an image closed 57%, at seconds an image, not
    # minutes; on 12 its kernels remade the inputs at 44.2 dB where KernelGAN's (3000 steps) did at
    # 40.6; and on synthetic images its width follows the truth, KernelGAN's does not
    # (docs/BENCHMARKS.md, "Patch recurrence, calibrated"). --kernel-estimator kernelgan for theirs.
    "blind": {"kernel": "estimate", "kernel_estimator": "recurrence", "ensemble": "none",
              "back_projection_iters": (2,), "p_as_is": 1.0, "p_no_interp": 0.0, "rotation": "none"},
    # Small and quick for CPUs and smoke tests: 200 steps of 48x48 crops.
    "fast": {"crop": 48, "max_iters": 200},
}


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in fields(FitConfig)}


def parse_value(name: str, value: Any) -> Any:
    """Coerce a CLI string or a YAML/TOML/manifest value to the type of field ``name``; a value that
    is not one says so naming the setting (not Python's "invalid literal for int()")."""
    kind = _field_types()[name]
    try:
        return _parse(name, kind, value)
    except (TypeError, ValueError) as e:
        if str(e).startswith(f"{name}: "):
            raise
        raise ValueError(f"{name}: expected {_KIND_WORDS.get(kind, kind)}, got {value!r}") from None


_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
               "tuple[int, ...]": "whole numbers, comma-separated"}


def _parse(name: str, kind: str, value: Any) -> Any:
    if kind in ("Scale",):
        return _pair(value, name)
    if kind == "tuple[Scale, ...]":
        if isinstance(value, str):
            value = [v for v in value.split(";") if v.strip()]
        return tuple(_pair(v, name) for v in value)
    if kind == "tuple[int, ...]":
        if isinstance(value, str):
            value = value.split(",")
        elif isinstance(value, int):
            value = [value]
        return tuple(_parse(name, "int", v) for v in value)
    if kind == "bool":
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name}: expected true/false, got {value!r}")
        if not isinstance(value, (bool, int)):
            raise TypeError(value)
        return bool(value)
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise TypeError(value)  # a number or text setting given true/false or a list: not silently 1
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
        return int(value)
    if kind == "float":
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        return f
    return str(value)


def _pair(value: Any, name: str) -> Scale:
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: expected a number or 'V,H', got {value!r}") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2:
        raise ValueError(f"{name}: expected a number or 'V,H', got {value!r}")
    return (nums[0], nums[1])


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file of FitConfig fields (a ``preset`` key is allowed too)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        data = tomllib.loads(text)
    elif p.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only needed for YAML files

        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"{p}: config files must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of settings at the top level")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(preset: str = "paper", file_values: Mapping[str, Any] | None = None,
            overrides: Mapping[str, Any] | None = None) -> FitConfig:
    """preset -> file -> overrides, each value coerced to its field's type, then validated.

    A ``preset`` key inside ``file_values`` is the caller's to honour (see ``cli``); it is ignored here.
    """
    merged: dict[str, Any] = {}
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    known = _field_types()
    for source in (PRESETS[preset], file_values or {}, overrides or {}):
        for key, value in source.items():
            key = key.replace("-", "_")
            if key == "preset":
                continue
            if key not in known:
                raise ValueError(f"unknown setting {key!r}")
            if value is None:
                continue
            merged[key] = parse_value(key, value)
    # A one-jump preset follows --scale; a gradual preset ends at its own last step.
    if "scale" in (overrides or {}) and "scale_steps" not in (overrides or {}) and merged.get("scale_steps"):
        raise ValueError(f"preset {preset!r} walks fixed scale steps to {merged['scale']}; "
                         "give --scale-steps as well to change the scale")
    return FitConfig(**merged)
