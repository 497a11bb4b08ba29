"""The detect -> upscale pipeline and its plugin system (pluggy project ``facetools``).

Public API:
- :class:`FacePipeline` chains the stages; :class:`PipelineConfig` chooses them by name.
- :data:`hookimpl` marks a plugin's hook implementations (see :mod:`.hookspecs`).
- :func:`make_plugin_manager` loads installed plugins and the built-in stages.
"""

from facetools_dapfsr.pipeline.config import MTCNNOptions, PasteOptions, PathOptions, PipelineConfig
from facetools_dapfsr.pipeline.hookspecs import hookimpl, hookspec
from facetools_dapfsr.pipeline.manager import PluginError, StageRegistry, make_plugin_manager
from facetools_dapfsr.pipeline.pipeline import FacePipeline, Stage, StageError
from facetools_dapfsr.pipeline.results import Detection, FaceResult, ImageResult

__all__ = [
    "Detection",
    "FacePipeline",
    "FaceResult",
    "ImageResult",
    "MTCNNOptions",
    "PasteOptions",
    "PathOptions",
    "PipelineConfig",
    "PluginError",
    "Stage",
    "StageError",
    "StageRegistry",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
]
