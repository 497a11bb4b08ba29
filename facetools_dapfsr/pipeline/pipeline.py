"""``FacePipeline``: detect -> align -> super-resolve -> upscale photo (background) -> post-process (paste)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy
import torch

from facetools_dapfsr.images import check_bit_depth
from facetools_dapfsr.pipeline.config import (
    DEFAULT_MAX_OUTPUT_MEGAPIXELS,
    PathOptions,
    PipelineConfig,
    check_fidelity,
    check_scale,
)
from facetools_dapfsr.pipeline.manager import StageRegistry, make_plugin_manager
from facetools_dapfsr.pipeline.resample import output_size
from facetools_dapfsr.pipeline.results import FaceResult, ImageResult
from facetools_dapfsr.pipeline.routing import (
    SUPER_RESOLVED,
    TOO_LARGE,
    FaceChoice,
    crop_side,
    render_size,
    select_faces,
)
from facetools_dapfsr.pipeline.stages import (
    ALIGN,
    BACKGROUND,
    DETECT,
    POST,
    SUPER_RESOLVE,
    stage_bit_depths,
)


class StageError(RuntimeError):
    """A stage failed on one photo; ``__cause__`` holds the original error."""

    def __init__(self, kind: str, name: str, source: str, error: BaseException) -> None:
        super().__init__(f"{kind} stage {name!r} failed on {source}: {type(error).__name__}: {error}")
        self.kind = kind
        self.name = name
        self.source = source
        self.error = error


@dataclass
class Stage:
    """A built stage with the name it was registered under."""

    kind: str
    name: str
    impl: Any


def _as_stage(kind: str, stage: Stage | Any) -> Stage:
    if isinstance(stage, Stage):
        return stage
    return Stage(kind, type(stage).__name__, stage)


class FacePipeline:
    """Chains one detector, one aligner, one super-resolver, one background upsampler and any
    post-processors.

    Build it from a configuration (stages chosen by name among those the plugins register)
    with :meth:`from_config`, or directly from stage objects.
    """

    def __init__(
        self,
        detector: Stage | Any,
        aligner: Stage | Any,
        super_resolver: Stage | Any,
        post_processors: Sequence[Stage | Any] = (),
        *,
        scale: float = 4.0,
        background: Stage | Any | None = None,
        paths: PathOptions | None = None,
        fidelity: float = 1.0,
        max_output_megapixels: float | None = DEFAULT_MAX_OUTPUT_MEGAPIXELS,
        hook: pluggy.HookRelay | None = None,
    ) -> None:
        """
        Args:
            detector, aligner, super_resolver, post_processors: stage objects (see
                :mod:`facetools_dapfsr.pipeline.stages` for what each must provide), or
                :class:`Stage` records naming them for the observers.
            scale: upscaling factor of the whole photo (default of :meth:`__call__`).
            background: the stage that upscales the whole photo under the faces (see
                :mod:`facetools_dapfsr.pipeline.background`); ``None``: bicubic resampling.
            paths: which faces are super-resolved, at what size, and when they are pasted
                (:mod:`facetools_dapfsr.pipeline.routing`); default :class:`PathOptions`.
            fidelity: default weight of the restored faces against the resampled photo.
            max_output_megapixels: a photo whose output would be larger is refused before any
                stage runs (``PipelineConfig.max_output_megapixels``); None: no bound.
            hook: a plugin manager's ``hook`` relay; its ``before_stage``, ``after_stage`` and
                ``on_stage_error`` observers are called around every stage. ``None``: no observers.
        """
        self.detector = _as_stage(DETECT, detector)
        self.aligner = _as_stage(ALIGN, aligner)
        self.super_resolver = _as_stage(SUPER_RESOLVE, super_resolver)
        if background is None:
            from facetools_dapfsr.pipeline.background import BicubicBackground

            background = Stage(BACKGROUND, "bicubic", BicubicBackground())
        self.background = _as_stage(BACKGROUND, background)
        self.post_processors = [_as_stage(POST, stage) for stage in post_processors]
        self.scale = check_scale(scale)
        self.paths = paths or PathOptions()
        self.fidelity = check_fidelity(fidelity)
        self.max_output_megapixels = max_output_megapixels
        self.hook = hook

    @classmethod
    def from_config(cls, config: PipelineConfig, plugin_manager: pluggy.PluginManager | None = None) -> FacePipeline:
        """Build the stages ``config`` names from the registered plugins.

        ``plugin_manager`` defaults to :func:`~facetools_dapfsr.pipeline.manager.make_plugin_manager`
        (installed plugins plus the built-ins).
        """
        manager = plugin_manager or make_plugin_manager()
        registry = StageRegistry.from_plugin_manager(manager)

        def build(kind: str, name: str) -> Stage:
            return Stage(kind, name, registry.build(kind, name, config))

        return cls(
            detector=build(DETECT, config.detector),
            aligner=build(ALIGN, config.aligner),
            super_resolver=build(SUPER_RESOLVE, config.super_resolver),
            post_processors=[build(POST, name) for name in config.post_processors],
            scale=config.scale,
            background=build(BACKGROUND, config.background),
            paths=config.paths,
            fidelity=config.fidelity,
            max_output_megapixels=config.max_output_megapixels,
            hook=manager.hook,
        )

    @property
    def stages(self) -> list[Stage]:
        return [self.detector, self.aligner, self.super_resolver, self.background, *self.post_processors]

    @property
    def bit_depths(self) -> tuple[int, ...]:
        """The composite depths this pipeline can run at: 16 bits too when every post stage
        declares it (a background stage of 8 bits only is widened; :mod:`~.stages`)."""
        if all(16 in stage_bit_depths(stage.impl) for stage in self.post_processors):
            return (8, 16)
        return (8,)

    def __call__(
        self,
        image: torch.Tensor,
        source: str = "<image>",
        *,
        scale: float | None = None,
        faces: FaceChoice = "all",
        min_score: float = 0.0,
        fidelity: float | None = None,
        bit_depth: int = 8,
    ) -> ImageResult:
        """Process one photo.

        Args:
            image: ``[3, H, W]`` float tensor in ``[0, 1]``.
            source: label used in results, reports and errors (usually the file path).
            scale: upscaling factor (default: the pipeline's).
            faces, min_score: which detected faces to process (:func:`~.routing.select_faces`);
                the others keep the resampled photo and are left out of the result.
            fidelity: weight of the restored faces in ``[0, 1]`` (default: the pipeline's).
            bit_depth: 8 (uint8 composite) or 16 (uint16, for a 16-bit photo); 16 falls back to
                8 when a post stage cannot edit 16 bits (:attr:`bit_depths`), as
                ``result.bit_depth`` then says.
        Raises:
            StageError: a stage failed (after the ``on_stage_error`` observers ran).
            ValueError: not a float image, or its output would exceed ``max_output_megapixels``.
        """
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"expected a float image [3, H, W] in [0, 1], got {tuple(image.shape)} {image.dtype}")
        scale = self.scale if scale is None else check_scale(scale)
        out_height, out_width = output_size((image.shape[1], image.shape[2]), scale)
        if self.max_output_megapixels is not None and out_height * out_width > self.max_output_megapixels * 1e6:
            raise ValueError(
                f"{source}: {image.shape[2]}x{image.shape[1]} at scale {scale:g} makes a {out_width}x{out_height} "
                f"output ({out_width * out_height / 1e6:.4g} MP), over the output budget of "
                f"{self.max_output_megapixels:g} MP (lower --scale, or raise --max-output-megapixels)"
            )
        fidelity = self.fidelity if fidelity is None else check_fidelity(fidelity)
        if check_bit_depth(bit_depth) not in self.bit_depths:
            bit_depth = 8  # a post stage of 8 bits only: it gets the uint8 composite it was written for
        result = ImageResult(source=source, image=image, scale=scale, fidelity=fidelity, bit_depth=bit_depth)
        self._run(self.detector, result, lambda item: self._detect(item, faces, min_score))
        self._run(self.aligner, result, self._align)
        self._run(self.super_resolver, result, self._super_resolve)
        self._run(self.background, result, self._upscale_background)
        for stage in self.post_processors:
            self._run(stage, result, stage.impl.process)
        return result

    # Each step stores its output in the result before the after_stage observers see it.
    def _detect(self, result: ImageResult, choice: FaceChoice, min_score: float) -> None:
        detections = self.detector.impl.detect(result.image)
        chosen = select_faces(detections, result.input_size, choice, min_score)
        result.faces = [FaceResult(detection=detections[i]) for i in chosen]

    def _align(self, result: ImageResult) -> None:
        detections = [face.detection for face in result.faces]
        size = self.super_resolver.impl.lr_size
        faces, valid, matrices = self.aligner.impl.align(result.image, detections, size)
        if len(faces) != len(detections):
            raise ValueError(f"aligner returned {len(faces)} crops for {len(detections)} faces")
        for i, face in enumerate(result.faces):
            face.lr_face, face.lr_valid, face.matrix = faces[i], valid[i], matrices[i]
            # The size rule (routing, step 1): faces the model would see at less than they hold
            # keep the resampled photo.
            face.input_side = crop_side(face.matrix, size)
            face.path = SUPER_RESOLVED if face.input_side <= self.paths.max_face_size else TOO_LARGE

    def _super_resolve(self, result: ImageResult) -> None:
        impl = self.super_resolver.impl
        # A stage that renders several sizes says so with ``output_sizes`` (routing, step 2);
        # others are called as before, at their one size.
        sizes = getattr(impl, "output_sizes", None)
        groups: dict[int | None, list[tuple[FaceResult, torch.Tensor]]] = {}
        for face in result.faces:
            if face.path == SUPER_RESOLVED:
                # _align sets the crop and its side with the path.
                assert face.lr_face is not None and face.input_side is not None
                wanted = render_size(face.input_side * result.scale, sizes) if sizes else None
                groups.setdefault(wanted, []).append((face, face.lr_face))
        for size, group in groups.items():
            lr = torch.stack([lr_face for _, lr_face in group])
            sr_faces = impl.super_resolve(lr) if size is None else impl.super_resolve(lr, size=size)
            if len(sr_faces) != len(group):
                raise ValueError(f"super-resolver returned {len(sr_faces)} faces for {len(group)} inputs")
            for (face, _), sr_face in zip(group, sr_faces, strict=True):
                face.sr_face = sr_face

    def _upscale_background(self, result: ImageResult) -> None:
        out_size = output_size(result.input_size, result.scale)
        impl = self.background.impl
        deep = result.bit_depth == 16
        if deep and 16 in stage_bit_depths(impl):
            composite = impl.upscale(result.image, out_size, bit_depth=16)
        else:
            # The 8-bit call, as every background stage has always been called.
            composite = impl.upscale(result.image, out_size)
            if deep and composite.dtype == torch.uint8:
                # A stage of 8 bits only under a 16-bit photo: 257 maps 0-255 onto 0-65535 exactly.
                composite = composite.to(torch.uint16).mul_(257)
        expected = torch.uint16 if deep else torch.uint8
        if composite.dtype != expected or tuple(composite.shape) != (3, *out_size):
            raise ValueError(
                f"background stage returned {tuple(composite.shape)} {composite.dtype}, expected (3, {out_size[0]}, "
                f"{out_size[1]}) {str(expected).removeprefix('torch.')}"
            )
        result.composite = composite

    def _run(self, stage: Stage, result: ImageResult, step: Callable[[ImageResult], None]) -> None:
        """Run one stage with the observers around it; errors become :class:`StageError`."""
        if self.hook is not None:
            self.hook.before_stage(kind=stage.kind, name=stage.name, item=result)
        started = time.perf_counter()
        try:
            step(result)
        except Exception as error:
            if self.hook is not None:
                self.hook.on_stage_error(kind=stage.kind, name=stage.name, item=result, error=error)
            raise StageError(stage.kind, stage.name, result.source, error) from error
        result.timings[f"{stage.kind}:{stage.name}"] = time.perf_counter() - started
        if self.hook is not None:
            self.hook.after_stage(kind=stage.kind, name=stage.name, item=result)
