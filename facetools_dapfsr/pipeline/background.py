"""The built-in ``background`` stages: how the whole photo is brought to the output size.

The faces are pasted on top afterwards (``post`` stages); this stage decides what everything
else looks like.

- ``bicubic`` (default): bicubic resampling, banded (:func:`~.resample.resample_image`).
- ``realesrgan``: Real-ESRGAN x4plus (:class:`~facetools_dapfsr.models.rrdbnet.RRDBNet`), run
  tile by tile so that memory stays bounded on large photos. The network only does x4; other
  scales run it at x4 and resample its output to the requested size, bicubic, with an
  antialiasing prefilter when that shrinks (what Real-ESRGAN's own ``--outscale`` does, with
  Lanczos). Below x4 the network's work is partly thrown away, and at x1 or less there is nothing
  to super-resolve: choose ``bicubic`` there.

Both map pixels the same way (:mod:`~.resample`: output pixel centre ``p'`` sits at input
position ``(p' + 0.5) / s - 0.5``), so the faces land where they belong on either background.

Both compute in float from the float photo and quantise only their output, to 8 bits or, for a
16-bit photo (``bit_depth=16``, see ``BackgroundUpsampler`` in :mod:`~.stages`), to 16 bits:
the network takes float input, so it sees the 16-bit photo's full precision, and neither stage
rounds a 16-bit photo to 8 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facetools_dapfsr.images import BIT_DEPTHS, check_bit_depth, quantise
from facetools_dapfsr.pipeline.config import PipelineConfig, RealESRGANOptions
from facetools_dapfsr.pipeline.resample import resample_image


class BicubicBackground:
    """Bicubic resampling of the whole photo (the behaviour before background stages existed)."""

    bit_depths = BIT_DEPTHS

    @classmethod
    def from_config(cls, config: PipelineConfig) -> BicubicBackground:
        return cls()

    def upscale(self, image: torch.Tensor, out_size: tuple[int, int], bit_depth: int = 8) -> torch.Tensor:
        return resample_image(image, out_size, bit_depth=bit_depth)


class RealESRGANBackground:
    """Real-ESRGAN x4plus over the whole photo, in overlapping tiles.

    Each tile of ``options.tile`` input pixels is run with ``options.overlap`` pixels of context
    on every side (clipped at the photo's edges) and only its core is kept, so that the seams the
    network's zero padding would leave fall outside what is kept. The result differs from one pass
    over the whole photo only by what the network sees further than ``overlap`` away (measured in
    ``tests/test_background.py``).
    """

    bit_depths = BIT_DEPTHS

    def __init__(
        self, model: torch.nn.Module, options: RealESRGANOptions | None = None, device: str | torch.device = "cpu"
    ) -> None:
        """``model``: an :class:`~facetools_dapfsr.models.rrdbnet.RRDBNet` (or any module with a
        ``scale`` attribute mapping ``[1, 3, h, w]`` to ``[1, 3, scale*h, scale*w]`` in ``[0, 1]``)."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.options = options or RealESRGANOptions()
        # A plain int attribute: nn.Module types unknown attributes as Tensor | Module.
        self.scale = int(model.scale)  # type: ignore[arg-type]

    @classmethod
    def from_config(cls, config: PipelineConfig) -> RealESRGANBackground:
        from facetools_dapfsr.models.rrdbnet import RRDBNet

        return cls(RRDBNet.from_weights_cache(progress=False), config.realesrgan, device=config.device)

    def upscale(self, image: torch.Tensor, out_size: tuple[int, int], bit_depth: int = 8) -> torch.Tensor:
        """``[3, H, W]`` float in ``[0, 1]`` -> ``[3, *out_size]`` uint8 (uint16 at ``bit_depth=16``)."""
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"expected a float image [3, H, W], got {tuple(image.shape)} {image.dtype}")
        check_bit_depth(bit_depth)
        height, width = image.shape[1:]
        out_h, out_w = out_size
        tile, overlap = self.options.tile, self.options.overlap
        result = torch.empty(3, out_h, out_w, dtype=torch.uint16 if bit_depth == 16 else torch.uint8)
        # Input-pixel coordinate of every output pixel centre (input pixel i covers [i, i + 1)).
        src_y = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (height / out_h)
        src_x = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (width / out_w)
        for top in range(0, height, tile):
            # The output rows whose centres fall in this tile's core (a contiguous run).
            r0, r1 = _span(src_y, top, min(height, top + tile))
            if r0 == r1:
                continue
            for left in range(0, width, tile):
                c0, c1 = _span(src_x, left, min(width, left + tile))
                if c0 == c1:
                    continue
                y0, y1 = max(0, top - overlap), min(height, top + tile + overlap)
                x0, x1 = max(0, left - overlap), min(width, left + tile + overlap)
                with torch.inference_mode():
                    sr = self.model(image[:, y0:y1, x0:x1].unsqueeze(0).to(self.device, torch.float32))
                # Output pixel centres in the SR tile's own pixel coordinates.
                ty = src_y[r0:r1] * self.scale - 0.5 - self.scale * y0
                tx = src_x[c0:c1] * self.scale - 0.5 - self.scale * x0
                result[:, r0:r1, c0:c1] = quantise(_sample(sr.float(), ty, tx)[0].cpu(), bit_depth)
        return result


def _span(coords: torch.Tensor, start: int, stop: int) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of the sorted ``coords`` lying in ``[start, stop)``."""
    bounds = torch.tensor([start, stop], dtype=coords.dtype)
    i0, i1 = torch.searchsorted(coords, bounds).tolist()
    return int(i0), int(i1)


def _sample(sr: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """``sr`` ``[1, C, h, w]`` at rows ``ty`` x columns ``tx`` (pixel coordinates, float64).

    At the network's own scale every position is a pixel centre and the pixels are copied;
    otherwise they are resampled bicubic, after an antialiasing shrink along any axis where the
    output is coarser than the network's pixels (bicubic alone would alias there).
    """
    if _is_integral(ty) and _is_integral(tx):
        return sr[:, :, ty.round().long()][..., tx.round().long()]
    h, w = sr.shape[-2:]
    # Output pixel pitch in SR pixels, per axis: > 1 means the output is coarser.
    pitch_y = float(ty[1] - ty[0]) if len(ty) > 1 else 1.0
    pitch_x = float(tx[1] - tx[0]) if len(tx) > 1 else 1.0
    small = (max(1, round(h / pitch_y)) if pitch_y > 1 else h, max(1, round(w / pitch_x)) if pitch_x > 1 else w)
    if small != (h, w):
        sr = F.interpolate(sr, size=small, mode="bicubic", antialias=True, align_corners=False)
        ty = (ty + 0.5) * (small[0] / h) - 0.5
        tx = (tx + 0.5) * (small[1] / w) - 0.5
        h, w = small
    grid_y = (2 * ty + 1) / h - 1
    grid_x = (2 * tx + 1) / w - 1
    grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1).unsqueeze(0)
    grid = grid.to(sr.device, sr.dtype)
    # "border" repeats edge pixels at the photo's edges, as the bicubic background does; inside
    # the photo the overlap keeps every tap within the tile.
    return F.grid_sample(sr.clamp(0, 1), grid, mode="bicubic", padding_mode="border", align_corners=False)


def _is_integral(values: torch.Tensor) -> bool:
    return bool(torch.all((values - values.round()).abs() < 1e-6)) and bool(values.min() >= 0)
