"""Model configuration: plain dataclasses, saved next to the weights as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

CONFIG_FORMAT_VERSION = 1


@dataclass
class EncoderConfig:
    """The DAP-FSR encoder E: ISTN + ResNet + multi-scale pyramid + one ALE per W+ slot."""

    depth: int = 50
    """ResNet depth: 18, 34 or 50 (paper: 50). Trained from scratch (random init)."""
    base_width: int = 64
    """Channels of the ResNet stem; stage widths are 1x, 2x, 4x, 8x of it (x4 for depth 50)."""
    input_size: int = 64
    """The LR face is upsampled (bilinear) to this side before the encoder."""
    pyramid_channels: int = 256
    """Channels each of C3, C4, C5 and C_global is projected to before concatenation."""
    ale_hidden: int = 256
    """Hidden width of each Adaptive Latent Encoding module."""
    ale_reduction: int = 4
    """Channel-attention bottleneck ratio inside each ALE module."""
    istn_stages: tuple[int, ...] = (0, 1)
    """Where Instance Spatial Transformer modules warp: 0 = the input image, k = after ResNet
    stage k (1..3). Empty disables ISTN."""
    istn_hidden: int = 32
    """Width of each ISTN localisation network."""

    def __post_init__(self) -> None:
        self.istn_stages = tuple(self.istn_stages)
        if self.depth not in (18, 34, 50):
            raise ValueError(f"encoder depth must be 18, 34 or 50, got {self.depth}")
        if any(stage not in (0, 1, 2, 3) for stage in self.istn_stages):
            raise ValueError(f"istn_stages must be within 0..3, got {self.istn_stages}")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"encoder input_size must be a multiple of 32, got {self.input_size}")


@dataclass
class StyleGAN2Config:
    """The native StyleGAN2 generator (pure PyTorch, no custom CUDA ops)."""

    type: ClassVar[str] = "stylegan2"
    resolution: int = 128
    """Output side: a power of two in 8..1024. This is the model's HR size."""
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    """Channels at resolution r are ``min(channel_base // r, channel_max)`` (config-f: 32768)."""
    channel_max: int = 512

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution > 1024 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two in 8..1024, got {self.resolution}")


@dataclass
class MobileStyleGANConfig:
    """The imported FFHQ face prior (MobileStyleGAN distilled from StyleGAN2-FFHQ).

    Its weights are not stored with the model: they come from the weights cache
    (``dapfsr weights fetch ffhq-mobilestylegan``), verified by content hash.
    """

    type: ClassVar[str] = "mobilestylegan"
    resolution: int = 128
    """Side of the HR face crop the decoder returns (the model's HR size)."""
    render_size: int = 1024
    """Side of the FFHQ frame that is rendered before cropping; smaller values exit the
    synthesis network early (cheaper, slightly less sharp)."""
    weights: str = "ffhq-mobilestylegan"
    """Name of the weights-cache entry that holds the prior."""


@dataclass
class ConsistencyConfig:
    """How :meth:`~facetools_dapfsr.DAPFSR.upscale` makes its output agree with the LR input."""

    enabled: bool = True
    """False: the decoder's raw output (the paper's method)."""
    weight: float = 1.0
    """Share of the residual's coarse part (tone, lighting, the shape of the features) put back
    per projection step (1: the output's LR matches the input at that scale)."""
    detail_weight: float = 1.0
    """Share of the residual's fine part (what a Gaussian of ``detail_scale`` removes) put back;
    equal to ``weight`` (the default): one undivided residual. Where the registration is a pixel
    off, the fine residual draws faint ghost edges beside the prior's features: 0.5 trades
    identity for face quality (300 CelebA test faces: face quality 0.589 -> 0.610, identity
    distance 0.427 -> 0.513, PSNR 23.32 -> 22.76 dB; ``benchmarks/RESULTS.md``), so the default
    keeps the whole residual."""
    detail_scale: float = 0.125
    """Standard deviation of the Gaussian that splits the residual, as a fraction of the LR side
    (0.125: 2 pixels of a 16 px LR); 0: no split, the whole residual at ``weight``."""
    projection_steps: int = 1
    """Back-projection steps (one gets the whole gain on CelebA; more only sharpen the residual's ringing)."""
    registration_steps: int = 80
    """Adam steps of the registration per starting angle."""
    registration_start_degrees: tuple[float, ...] = (-7.0, 0.0, 7.0)
    """Starting rotations: the protocol's misalignment reaches 10 degrees, beyond the reach of
    one descent from 0."""
    registration_learning_rate: float = 0.01
    registration_side: int = 64
    """The output is registered at this side (downsampled first): the LR decides the match, so
    the full-size face would only cost time."""
    refine_steps: int = 0
    """Adam steps on the face's code, between registration and projection, so that the prior's
    own face agrees with the LR (the less the projection has to put back, the fewer ghost edges
    it draws); 0: none. The built-in model ships with 15 (its ``config.json``; 300 CelebA test
    faces: face quality 0.589 -> 0.629, identity distance 0.429 -> 0.423, PSNR +0.13 dB,
    ``benchmarks/RESULTS.md``). Each step renders the face forward and backward, so this is the
    expensive part when it is on (15 steps: several seconds per face on one CPU core)."""
    refine_learning_rate: float = 0.1
    """Adam step on the code offset, in units of the W statistics' sigma (Eq. 2 space)."""
    refine_slots: int = 8
    """The first (coarse) W+ slots the refinement moves; the finer slots keep the encoder's code,
    so the prior's detail stays its own. 0: every slot."""

    def __post_init__(self) -> None:
        self.registration_start_degrees = tuple(float(a) for a in self.registration_start_degrees)
        for name in ("weight", "detail_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"consistency {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.detail_scale <= 0.25:
            raise ValueError(f"consistency detail_scale must be in [0, 0.25], got {self.detail_scale}")
        if self.projection_steps < 1 or self.registration_steps < 0:
            raise ValueError("consistency needs projection_steps >= 1 and registration_steps >= 0")
        if not self.registration_start_degrees:
            raise ValueError("registration_start_degrees needs at least one angle")
        if self.registration_side < 8:
            raise ValueError(f"registration_side must be at least 8, got {self.registration_side}")
        if self.refine_steps < 0 or self.refine_slots < 0 or self.refine_learning_rate <= 0:
            raise ValueError("consistency needs refine_steps >= 0, refine_slots >= 0 and refine_learning_rate > 0")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["registration_start_degrees"] = list(self.registration_start_degrees)
        return data


DECODER_CONFIGS: dict[str, type] = {cls.type: cls for cls in (StyleGAN2Config, MobileStyleGANConfig)}
DecoderConfig = StyleGAN2Config | MobileStyleGANConfig


@dataclass
class DAPFSRConfig:
    """Everything needed to build a :class:`~facetools_dapfsr.DAPFSR` model (no weights)."""

    lr_size: int = 16
    """Side of the LR input face."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=StyleGAN2Config)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    """Inference only: how :meth:`~facetools_dapfsr.DAPFSR.upscale` makes its output agree with
    the LR input (:mod:`facetools_dapfsr.models.consistency`). A config saved before it existed
    gets the default (on)."""

    PRESETS: ClassVar[tuple[str, ...]] = ("tiny", "paper", "prior")

    def __post_init__(self) -> None:
        if self.lr_size < 4:
            raise ValueError(f"lr_size must be at least 4, got {self.lr_size}")
        if self.decoder.resolution < self.lr_size:
            raise ValueError(f"decoder resolution {self.decoder.resolution} is below lr_size {self.lr_size}")

    @property
    def hr_size(self) -> int:
        return self.decoder.resolution

    @property
    def scale(self) -> int:
        return self.hr_size // self.lr_size

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def tiny(cls) -> DAPFSRConfig:
        """A few hundred thousand parameters: unit tests and smoke runs in seconds on CPU."""
        return cls(
            lr_size=16,
            encoder=EncoderConfig(
                depth=18, base_width=8, input_size=32, pyramid_channels=16, ale_hidden=16, istn_hidden=8
            ),
            decoder=StyleGAN2Config(
                resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32
            ),
        )

    @classmethod
    def paper(cls) -> DAPFSRConfig:
        """Paper size: ResNet-50 encoder, 128 px StyleGAN2 config-f decoder, 16 -> 128."""
        return cls(lr_size=16, encoder=EncoderConfig(depth=50), decoder=StyleGAN2Config(resolution=128))

    @classmethod
    def prior(cls) -> DAPFSRConfig:
        """ResNet-18 encoder on the imported FFHQ prior (weights from the weights cache)."""
        return cls(lr_size=16, encoder=EncoderConfig(depth=18), decoder=MobileStyleGANConfig(resolution=128))

    @classmethod
    def from_preset(cls, name: str) -> DAPFSRConfig:
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(cls.PRESETS)}")
        return getattr(cls, name)()

    @classmethod
    def from_preset_or_file(cls, name_or_path: str | Path) -> DAPFSRConfig:
        """A preset name (``tiny``, ``paper``, ``prior``) or a path to a JSON config file."""
        if str(name_or_path) in cls.PRESETS:
            return cls.from_preset(str(name_or_path))
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name_or_path!s} is neither a preset ({', '.join(cls.PRESETS)}) nor a config file"
            )
        return cls.from_json_file(path)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        decoder = {"type": self.decoder.type, **dataclasses.asdict(self.decoder)}
        encoder = dataclasses.asdict(self.encoder)
        encoder["istn_stages"] = list(self.encoder.istn_stages)
        return {
            "format_version": CONFIG_FORMAT_VERSION,
            "model_type": "dapfsr",
            "lr_size": self.lr_size,
            "encoder": encoder,
            "decoder": decoder,
            "consistency": self.consistency.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DAPFSRConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object, got {type(data).__name__}")
        data = dict(data)
        if data.pop("model_type", "dapfsr") != "dapfsr":
            raise ValueError("config is not a DAP-FSR config (model_type != 'dapfsr')")
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"config field 'format_version' must be an integer, got {version!r}")
        if version > CONFIG_FORMAT_VERSION:
            raise ValueError(f"config format version {version} is newer than this package supports")
        encoder = build_dataclass(EncoderConfig, data.pop("encoder", {}), "encoder")
        decoder_data = data.pop("decoder", {})
        if not isinstance(decoder_data, dict):
            raise ValueError(f"config field 'decoder' must be an object, got {decoder_data!r}")
        decoder_data = dict(decoder_data)
        decoder_type = decoder_data.pop("type", StyleGAN2Config.type)
        if decoder_type not in DECODER_CONFIGS:
            raise ValueError(f"unknown decoder type {decoder_type!r}; known: {', '.join(DECODER_CONFIGS)}")
        decoder = build_dataclass(DECODER_CONFIGS[decoder_type], decoder_data, "decoder")
        consistency = build_dataclass(ConsistencyConfig, data.pop("consistency", {}), "consistency")
        return build_dataclass(
            cls, {**data, "encoder": encoder, "decoder": decoder, "consistency": consistency}, "config"
        )

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> DAPFSRConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        try:
            return cls.from_dict(data)
        except ValueError as error:  # name the file: a model folder's config is one of several
            raise ValueError(f"{path}: {error}") from error


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass, naming unknown keys and mistyped values (a JSON ``"16"``
    where a number belongs) instead of a bare TypeError deep inside."""
    if not isinstance(data, dict):
        raise ValueError(f"config field {where!r} must be an object, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} field(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        expected = _JSON_TYPES.get(hints[name])
        if expected is None:
            continue  # nested configs are built (and checked) by their own build_dataclass
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if hints[name] in (tuple[int, ...], tuple[float, ...]):
            items = (int,) if hints[name] == tuple[int, ...] else (int, float)
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, items) and not isinstance(v, bool) for v in value
            )
        if not ok:
            raise ValueError(f"{where} field {name!r} must be {_TYPE_NAMES[hints[name]]}, got {value!r}")
    return cls(**data)


_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
    tuple[int, ...]: (list, tuple),
    tuple[float, ...]: (list, tuple),
}
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    tuple[int, ...]: "a list of integers",
    tuple[float, ...]: "a list of numbers",
}
