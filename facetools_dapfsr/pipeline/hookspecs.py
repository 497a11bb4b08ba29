"""The stage contract: pluggy hook specifications of the ``facetools`` project.

A plugin is any object or module with functions marked ``@hookimpl`` whose names match the
specs below. Installed distributions advertise plugins in the ``facetools`` entry-point group;
the built-in stages (``facetools_dapfsr.pipeline.builtin``) use exactly the same hooks.

Stage kinds, in pipeline order (see :mod:`facetools_dapfsr.pipeline.stages` for what each stage
object must provide):

- ``detect``: photo -> face boxes, 5 landmarks and scores;
- ``align``: photo + detections -> aligned LR face crops and their warps;
- ``super_resolve``: LR faces -> HR faces, batched;
- ``background``: the whole photo -> the photo at the output size (under the faces), uint8, or
  uint16 for a 16-bit photo when the stage declares ``bit_depths = (8, 16)``;
- ``post``: edits the composited (upscaled) photo, e.g. pastes the HR faces back.

A stage written for 8 bits (no ``bit_depths``) keeps working on 16-bit photos: the rule is in
:mod:`facetools_dapfsr.pipeline.stages`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from facetools_dapfsr.pipeline.config import PipelineConfig
    from facetools_dapfsr.pipeline.results import ImageResult

PROJECT_NAME = "facetools"
"""The pluggy project name; also the entry-point group plugins are published under."""

ENTRY_POINT_GROUP = "facetools"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

StageFactory = Callable[["PipelineConfig"], Any]
"""Builds a stage object from the pipeline configuration (called once per pipeline)."""

RegisterStage = Callable[[str, str, StageFactory], None]
"""``register(kind, name, factory)``; ``kind`` is one of ``detect``, ``align``, ``super_resolve``,
``background``, ``post``; ``name`` is what a configuration uses to choose the stage."""


@hookspec
def register_stages(register: RegisterStage) -> None:
    """Register stages by kind and name: call ``register(kind, name, factory)`` once per stage.

    Factories must be cheap to register: do heavy work (loading weights) inside the factory,
    which runs only for the stages a configuration chooses.
    """


@hookspec
def before_stage(kind: str, name: str, item: ImageResult) -> None:
    """Observer: stage ``name`` of ``kind`` is about to run on ``item`` (one photo)."""


@hookspec
def after_stage(kind: str, name: str, item: ImageResult) -> None:
    """Observer: stage ``name`` of ``kind`` finished on ``item``; ``item`` holds its results."""


@hookspec
def on_stage_error(kind: str, name: str, item: ImageResult, error: BaseException) -> None:
    """Observer: stage ``name`` of ``kind`` raised ``error`` on ``item``.

    The pipeline re-raises the error afterwards (as :class:`~facetools_dapfsr.pipeline.pipeline.StageError`),
    so batch runs report the photo and go on with the next one.
    """
