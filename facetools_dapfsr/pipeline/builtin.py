"""The built-in stages, registered through the same hook as any third-party plugin.

Published as the ``dapfsr`` entry point of the ``facetools`` group (see ``pyproject.toml``).
The stage classes are imported inside the factories so that registering costs nothing.
"""

from __future__ import annotations

from typing import Any

from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.hookspecs import RegisterStage, hookimpl
from facetools_dapfsr.pipeline.stages import (
    ALIGN,
    BACKGROUND,
    DETECT,
    POST,
    SUPER_RESOLVE,
)


def build_mtcnn(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.detect_mtcnn import MTCNNDetector

    return MTCNNDetector.from_config(config)


def build_aligned_input(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.detect_aligned import AlignedInputDetector

    return AlignedInputDetector.from_config(config)


def build_template_aligner(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.align import TemplateAligner

    return TemplateAligner.from_config(config)


def build_dapfsr(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.super_resolve import DAPFSRSuperResolver

    return DAPFSRSuperResolver.from_config(config)


def build_bicubic(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.super_resolve import BicubicSuperResolver

    return BicubicSuperResolver.from_config(config)


def build_bicubic_background(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.background import BicubicBackground

    return BicubicBackground.from_config(config)


def build_realesrgan_background(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.background import RealESRGANBackground

    return RealESRGANBackground.from_config(config)


def build_paste(config: PipelineConfig) -> Any:
    from facetools_dapfsr.pipeline.paste import FacePaster

    return FacePaster.from_config(config)


@hookimpl
def register_stages(register: RegisterStage) -> None:
    register(DETECT, "mtcnn", build_mtcnn)
    register(DETECT, "aligned", build_aligned_input)
    register(ALIGN, "template", build_template_aligner)
    register(SUPER_RESOLVE, "dapfsr", build_dapfsr)
    register(SUPER_RESOLVE, "bicubic", build_bicubic)
    register(BACKGROUND, "bicubic", build_bicubic_background)
    register(BACKGROUND, "realesrgan", build_realesrgan_background)
    register(POST, "paste", build_paste)
