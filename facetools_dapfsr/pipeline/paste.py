"""The built-in ``paste`` post-processor: inverse-warp each super-resolved face into the upscaled
photo and blend it with a feathered mask, so that no seam shows."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import (
    crop_footprint,
    invert_affine,
    rescale_matrix,
    warp_affine,
)
from facetools_dapfsr.images import BIT_DEPTHS, bit_depth_of, max_level, quantise
from facetools_dapfsr.pipeline.config import PasteOptions, PipelineConfig, check_replace
from facetools_dapfsr.pipeline.resample import input_to_output
from facetools_dapfsr.pipeline.results import FaceResult, ImageResult
from facetools_dapfsr.pipeline.routing import NOT_SHARPER, sharpness


def feather_mask(size: int, feather: float = 0.2, exponent: float = 4.0) -> torch.Tensor:
    """``[1, size, size]`` blending weights of a face crop: 1 in the middle, smoothly 0 at the edge.

    The shape is a superellipse ``|u|^p + |v|^p = 1`` over the crop (``p = exponent``), so the
    corners, which hold hair or background rather than face, keep the photo's own pixels; the
    weight falls from 1 to 0 over ``feather`` of the half side with a smoothstep, whose zero
    slope at both ends leaves no visible edge.
    """
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    radius = (u.abs() ** exponent + v.abs() ** exponent) ** (1.0 / exponent)
    t = ((1.0 - radius) / feather).clamp(0, 1)
    return (t * t * (3 - 2 * t)).to(torch.float32).unsqueeze(0)


def face_to_output_matrix(face: FaceResult, input_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """``[2, 3]`` affine mapping the super-resolved face's pixels to output-photo pixels."""
    if face.lr_face is None or face.sr_face is None or face.matrix is None:
        raise ValueError("the face was not super-resolved: it has no lr_face, sr_face or matrix")
    lr = face.lr_face.shape[-1]
    hr = face.sr_face.shape[-1]
    k = hr / lr
    lr_to_hr = np.vstack([rescale_matrix(k, k), [0.0, 0.0, 1.0]])
    input_to_lr = np.vstack([face.matrix, [0.0, 0.0, 1.0]])
    output_to_input = np.vstack([invert_affine(input_to_output(input_size, out_size)), [0.0, 0.0, 1.0]])
    output_to_hr = (lr_to_hr @ input_to_lr @ output_to_input)[:2]
    return invert_affine(output_to_hr)


def photo_band(image: torch.Tensor, factor: float) -> torch.Tensor:
    """What of ``image`` (``[C, H, W]`` in output pixels) survives at the input's resolution:
    shrunk by the photo's upscaling ``factor`` (antialiased) and resampled back (bicubic, as the
    background is)."""
    if factor <= 1:
        return image
    height, width = image.shape[-2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    down = F.interpolate(image.unsqueeze(0), size=small, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(down, size=(height, width), mode="bicubic", align_corners=False)[0]


class FacePaster:
    """Blends ``result.faces[i].sr_face`` into ``result.composite`` where each face came from.

    Per face, in the output's pixels: the restored face is made consistent with the photo
    (``PasteOptions.consistency``), pasted only if it is sharper than the resampled photo under
    it (``replace="sharper"``, :mod:`facetools_dapfsr.pipeline.routing` step 4), and blended with
    weight ``result.fidelity`` times the feathered mask. The blend is float (the faces are float)
    and is quantised back to the composite's own depth, uint8 or uint16.
    """

    bit_depths = BIT_DEPTHS

    def __init__(self, options: PasteOptions | None = None, replace: str = "sharper") -> None:
        self.options = options or PasteOptions()
        self.replace = check_replace(replace)

    @classmethod
    def from_config(cls, config: PipelineConfig) -> FacePaster:
        return cls(config.paste, replace=config.paths.replace)

    def process(self, result: ImageResult) -> None:
        if result.composite is None:
            raise ValueError("paste needs the upscaled photo (result.composite)")
        out_h, out_w = result.composite.shape[1:]
        for face in result.faces:
            if face.sr_face is None or face.matrix is None or face.lr_face is None:
                continue
            self._paste(result.composite, face, result.input_size, (out_h, out_w), result.fidelity)

    def _paste(
        self,
        composite: torch.Tensor,
        face: FaceResult,
        input_size: tuple[int, int],
        out_size: tuple[int, int],
        fidelity: float = 1.0,
    ) -> None:
        assert face.sr_face is not None  # process() pastes super-resolved faces only
        hr = face.sr_face.shape[-1]
        to_output = face_to_output_matrix(face, input_size, out_size)
        # Only the face's footprint in the output is touched (and warped): cost follows the face size.
        x0, y0, x1, y1 = crop_footprint(invert_affine(to_output), hr, margin=1)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(out_size[1], x1), min(out_size[0], y1)
        if x1 <= x0 or y1 <= y0:
            return
        mask = feather_mask(hr, self.options.feather, self.options.exponent) * self._valid_weight(face, hr)
        to_region = to_output.copy()
        to_region[:, 2] -= [x0, y0]
        stacked = torch.cat([face.sr_face.float().cpu(), mask], dim=0).unsqueeze(0)
        warped, inside = warp_affine(stacked, to_region, (y1 - y0, x1 - x0))
        colour = warped[0, :3]
        weight = warped[0, 3:] * inside[0]
        bit_depth = bit_depth_of(composite)
        region = composite[:, y0:y1, x0:x1].float() / max_level(bit_depth)
        change = weight * fidelity * (colour - region)
        if self.options.consistency:
            # The photo's own pixels decide everything the photo resolves; the restored face
            # only adds the detail finer than one input pixel. The band is taken of the
            # feathered change, not of the face, so the crop's edge leaves no seam.
            change = change - photo_band(change, out_size[0] / input_size[0])
        pasted = (region + change).clamp(0, 1)
        if self.replace == "sharper":
            core = (weight > 0.5).float().unsqueeze(0)
            if not bool(sharpness(pasted.unsqueeze(0), core) > sharpness(region.unsqueeze(0), core)):
                face.path = NOT_SHARPER
                return
        composite[:, y0:y1, x0:x1] = quantise(pasted, bit_depth)

    @staticmethod
    def _valid_weight(face: FaceResult, hr: int) -> torch.Tensor:
        """``[1, hr, hr]``: fades the face out where its LR crop was padding (photo edges),
        since the super-resolved pixels there were invented from black."""
        if face.lr_valid is None or bool(face.lr_valid.min() >= 1):
            return torch.ones(1, hr, hr)
        valid = F.interpolate(face.lr_valid.float().unsqueeze(0), size=(hr, hr), mode="bilinear", align_corners=False)
        kernel = max(3, hr // 4) | 1
        smooth = F.avg_pool2d(valid, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
        # 0 on the padding boundary, 1 half a kernel inside it, smoothstep in between.
        t = ((smooth - 0.5) * 2).clamp(0, 1)
        return (t * t * (3 - 2 * t))[0]
