"""``FaceUpscaler``: the whole photo pipeline in one call from Python (as ``GFPGANer.enhance``).

    from facetools_dapfsr import FaceUpscaler

    upscaler = FaceUpscaler.from_pretrained()          # the built-in model, offline
    result = upscaler.enhance("group.jpg", scale=4)    # path, PIL image, numpy array or tensor
    result.image.save("group_x4.png")                  # the composite, a PIL image
    for face in result.faces:                          # box, landmarks, score, lr_face, sr_face, path
        print(face.box, face.path)

A 16-bit grey photo (a 16-bit PNG or TIFF, a PIL ``I;16`` image, a uint16 array) comes back as a
16-bit ``I;16`` image; :meth:`Enhanced.save` writes it as ``dapfsr upscale`` does (16 bits to
PNG and TIFF, 8 bits with a warning elsewhere), and ``enhance(..., keep_depth=False)`` gives 8 bits.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facetools_dapfsr.images import (
    DEEP_MODES,
    GREY_MODES,
    is_grey_content,
    max_level,
    quantise,
    read_image,
    save_image,
    to_pil,
    to_rgb_tensor,
    written_bit_depth,
)
from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.pipeline import FacePipeline
from facetools_dapfsr.pipeline.results import FaceResult, ImageResult
from facetools_dapfsr.pipeline.routing import FaceChoice
from facetools_dapfsr.pipeline.sharding import resolve_device

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor


@dataclass
class Enhanced:
    """What :meth:`FaceUpscaler.enhance` returns."""

    image: Image.Image
    """The upscaled photo with its restored faces: ``L`` when the input was grey, ``I;16`` when it
    was 16-bit grey (its 16 bits kept; Pillow converts ``I;16`` to ``L`` or saves it as JPEG or
    WebP only by clipping or refusing it: use :meth:`save`), else ``RGB``."""
    faces: list[FaceResult]
    """Per processed face: ``box``, ``landmarks``, ``score``, ``lr_face`` (the model's input),
    ``sr_face`` (the restored face, ``None`` when it was not super-resolved) and ``path``
    (``super-resolved`` or ``resampled: <why>``)."""
    result: ImageResult = field(repr=False)
    """The pipeline's full record (timings, composite as a uint8 tensor, uint16 at 16 bits)."""

    @property
    def array(self) -> np.ndarray:
        """The composite as ``[H, W, 3]`` uint8 RGB, a 16-bit result rounded to 8 bits (code that
        reads ``array`` expects uint8; the 16 bits are in :attr:`image` and ``result.composite``)."""
        composite = self.result.composite
        assert composite is not None  # the background stage sets it in every pipeline run
        if composite.dtype == torch.uint16:
            composite = quantise(composite.float().div_(max_level(16)), 8)
        return composite.permute(1, 2, 0).numpy()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the composite atomically, as ``dapfsr upscale`` writes it: grey stays grey, and a
        16-bit result is written at 16 bits to PNG and TIFF and at 8 bits, with a ``UserWarning``,
        to formats that hold 8 bits only (JPEG, WebP, BMP)."""
        assert self.result.composite is not None  # the background stage sets it in every pipeline run
        grey = self.image.mode != "RGB"
        bit_depth, note = written_bit_depth(path, self.result.bit_depth, grey)
        if note is not None:
            warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
        return save_image(self.result.composite, path, grey=grey, bit_depth=bit_depth)


def as_photo(image: ImageInput, channel_order: str = "rgb") -> tuple[torch.Tensor, bool]:
    """Any supported input -> (``[3, H, W]`` float in ``[0, 1]``, whether it is grey).

    Paths go through the reader of ``dapfsr upscale`` (EXIF orientation, 16-bit, transparency,
    the pixel budget; the first frame of an animated file, with a ``UserWarning``); PIL images
    through its pixel conversion (16-bit, transparency), as they are. Arrays are ``[H, W]`` or
    ``[H, W, 3]``, uint8 (0-255), uint16 (0-65535) or float (0-1), in ``channel_order``
    (``"rgb"``, or ``"bgr"`` for OpenCV). Tensors are ``[3, H, W]`` or ``[H, W]``, uint8, uint16
    or float in ``[0, 1]``.
    """
    photo, grey, _ = load_photo(image, channel_order)
    return photo, grey


def load_photo(image: ImageInput, channel_order: str = "rgb") -> tuple[torch.Tensor, bool, int]:
    """:func:`as_photo`, and the input's bit depth: 16 for a deep grey file or PIL image
    (:data:`~facetools_dapfsr.images.DEEP_MODES`) and for uint16 arrays and tensors, else 8."""
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(image, (str, os.PathLike)):
        loaded = read_image(Path(image))
        for note in loaded.warnings:  # frames of an animated file are left out: say so
            warnings.warn(f"{image}: {note}", UserWarning, stacklevel=3)
        return loaded.image, loaded.is_grey, loaded.bit_depth
    if isinstance(image, Image.Image):
        tensor = to_rgb_tensor(image)
        return tensor, image.mode in GREY_MODES or is_grey_content(tensor), 16 if image.mode in DEEP_MODES else 8
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 3:
            pixels = image[..., ::-1] if channel_order == "bgr" else image
            tensor = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)  # a writable copy
        elif image.ndim == 2:
            tensor = torch.from_numpy(np.array(image)).unsqueeze(0)
        else:
            raise ValueError(f"expected an array [H, W] or [H, W, 3], got shape {image.shape}")
    elif isinstance(image, torch.Tensor):
        if image.ndim == 2:
            tensor = image.unsqueeze(0)
        elif image.ndim == 3 and image.shape[0] == 3:
            tensor = image.flip(0) if channel_order == "bgr" else image
        else:
            raise ValueError(f"expected a tensor [3, H, W] or [H, W], got shape {tuple(image.shape)}")
    else:
        raise TypeError(f"expected a path, PIL image, numpy array or tensor, got {type(image).__name__}")
    single_channel = tensor.shape[0] == 1
    bit_depth = 16 if tensor.dtype == torch.uint16 else 8
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255
    elif tensor.dtype == torch.uint16:  # OpenCV's IMREAD_ANYDEPTH, a 16-bit camera frame
        tensor = tensor.float() / 65535
    elif tensor.is_floating_point():
        low, high = float(tensor.min()), float(tensor.max())
        if low < 0 or high > 1:
            raise ValueError(f"expected float pixels in [0, 1], got [{low:.3g}, {high:.3g}]; pass uint8 for 0-255")
        tensor = tensor.float()
    else:
        raise ValueError(f"expected uint8, uint16 or float pixels, got {tensor.dtype}")
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"the image is empty: {tuple(tensor.shape)}")
    return tensor.expand(3, -1, -1).contiguous(), single_channel or is_grey_content(tensor), bit_depth


class FaceUpscaler:
    """Detect, super-resolve and paste faces into an upscaled photo, one call per photo."""

    def __init__(self, pipeline: FacePipeline) -> None:
        self.pipeline = pipeline

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | Any | None = None,
        adapter: str | os.PathLike[str] | None = None,
        device: str = "auto",
        **options: Any,
    ) -> FaceUpscaler:
        """Build the pipeline around a model.

        Args:
            model: local folder or Hub id for ``DAPFSR.from_pretrained``, a ``DAPFSR`` instance,
                or ``None`` for the built-in model.
            adapter: a domain adapter to load into it (folder or Hub id).
            device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``.
            options: any other :class:`~facetools_dapfsr.pipeline.config.PipelineConfig` field
                (``revision``, ``min_face_size``, ``batch_size``, ``paths``, ``paste``, ...).
        """
        config = PipelineConfig(model=model, adapter=adapter, device=resolve_device(device), **options)
        return cls(FacePipeline.from_config(config))

    def enhance(
        self,
        image: ImageInput,
        scale: float = 4.0,
        faces: FaceChoice = "all",
        min_score: float = 0.0,
        fidelity: float = 1.0,
        channel_order: str = "rgb",
        keep_grey: bool = True,
        keep_depth: bool = True,
    ) -> Enhanced:
        """Upscale one photo by ``scale`` and restore its faces.

        Args:
            image: a path, PIL image, numpy array or tensor (see :func:`as_photo`).
            scale: upscaling factor of the whole photo.
            faces: ``"all"``, ``"largest"``, ``"center"`` or indices into the detected faces.
            min_score: detections scoring below it are left alone (the detector itself already
                drops those below ``MTCNNOptions.min_score``, 0.9).
            fidelity: weight of the restored faces against the resampled photo, in ``[0, 1]``.
            channel_order: ``"rgb"`` or ``"bgr"`` for arrays and tensors.
            keep_grey: a grey input (one channel, a grey mode, or three equal channels) gives a
                grey (``L``) image; ``False``: always ``RGB``.
            keep_depth: a 16-bit grey input is processed and returned at 16 bits (``I;16``);
                ``False``: at 8 bits (``L``). With ``keep_grey=False`` (or a uint16 colour array) it
                is 8-bit ``RGB``, with a ``UserWarning`` (Pillow holds no 16-bit colour).
        Returns:
            :class:`Enhanced`: the composite (``.image``) and the faces (``.faces``).
        """
        photo, grey, depth = load_photo(image, channel_order)
        source = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
        grey = keep_grey and grey
        bit_depth = 16 if keep_depth and depth == 16 else 8
        if bit_depth == 16 and not grey:
            why = "a colour picture" if keep_grey else "keep_grey=False"
            warnings.warn(
                f"{source}: 16-bit input returned as 8-bit RGB ({why}; Pillow holds no 16-bit colour)",
                UserWarning,
                stacklevel=2,
            )
            bit_depth = 8
        result = self.pipeline(
            photo, source, scale=scale, faces=faces, min_score=min_score, fidelity=fidelity, bit_depth=bit_depth
        )
        if result.bit_depth < bit_depth:
            message = f"{source}: 16-bit grey returned at 8 bits: a post stage edits 8-bit composites only"
            warnings.warn(message, UserWarning, stacklevel=2)
        assert result.composite is not None  # the background stage sets it in every pipeline run
        return Enhanced(image=to_pil(result.composite, grey=grey), faces=result.faces, result=result)
