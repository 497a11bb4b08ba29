"""The face template and the similarity warps that align faces to it.

This module is the single place that defines the model's face crop. Everything that makes or
consumes an aligned face (training data, evaluation, the imported prior's crop of its FFHQ
frame, the detect -> upscale pipeline) goes through it.

Conventions (stated once, used everywhere):
- images are float tensors ``[B, C, H, W]`` (or ``[C, H, W]``) with values in ``[0, 1]``;
- landmark and pixel coordinates are ``(x, y)`` with pixel centres at integer positions
  (pixel ``(0, 0)`` covers ``[-0.5, 0.5]^2``), the convention of MTCNN and OpenCV;
- landmark order: left eye, right eye, nose tip, left mouth corner, right mouth corner
  ("left" as seen in the image);
- an image resampled by a factor ``s`` (per axis) maps pixel ``p`` to ``(p + 0.5) * s - 0.5``
  (the ``align_corners=False`` convention of PyTorch and Pillow): :func:`rescale_matrix`,
  :func:`resampled_points`, :func:`original_points`;
- a ``size`` crop covers ``-0.5 .. size - 0.5`` of its own pixels; where that lies in the
  source: :func:`crop_corners`, :func:`crop_footprint`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Template in units of the crop side, measured from the crop's top-left corner.
# Eye distance is 0.6 of the width so that the crop fits inside Extended Yale B's tight crops
# (eye distance 0.59 of the image width there) and little padding enters the ground truth;
# the vertical layout follows CelebA's mean landmarks (eye-to-mouth = 1.13 eye distances).
FACE_TEMPLATE = np.array(
    [
        [0.200, 0.220],  # left eye
        [0.800, 0.220],  # right eye
        [0.500, 0.560],  # nose tip
        [0.245, 0.895],  # left mouth corner
        [0.755, 0.895],  # right mouth corner
    ],
    dtype=np.float64,
)


def template_points(size: int) -> np.ndarray:
    """Template landmarks in pixel coordinates of a ``size`` x ``size`` crop."""
    return FACE_TEMPLATE * size - 0.5


def aligned_crop_points(width: int, height: int) -> np.ndarray:
    """Landmarks of an image that is already a template crop (square, any side): the template's
    points at its size. Raises ``ValueError`` for a non-square image."""
    if width != height:
        raise ValueError(f"{width}x{height} is not a square template crop")
    return template_points(width)


def rescale_matrix(sx: float, sy: float) -> np.ndarray:
    """``[2, 3]`` affine from an image's pixel coordinates to those of the image resampled by
    ``sx`` horizontally and ``sy`` vertically."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def resampled_points(points: np.ndarray, factor: float) -> np.ndarray:
    """Coordinates ``points`` of an image -> the same points in the image resampled by ``factor``."""
    return (points + 0.5) * factor - 0.5


def original_points(points: np.ndarray, factor: float) -> np.ndarray:
    """The inverse of :func:`resampled_points`: points of the image resampled by ``factor`` ->
    the image's own. (Divides by ``factor``: its reciprocal is not exact, and found landmarks
    keep the numbers they always had.)"""
    return (points + 0.5) / factor - 0.5


def crop_corners(matrix: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """``[4, 2]`` corners of the ``size`` crop of ``matrix`` (source pixels -> crop pixels),
    widened by ``margin`` crop pixels on each side, in source pixel coordinates."""
    low, high = -0.5 - margin, size - 0.5 + margin
    inverse = invert_affine(matrix)
    corners = np.array([[low, low], [high, low], [low, high], [high, high]])
    return corners @ inverse[:, :2].T + inverse[:, 2]


def crop_footprint(matrix: np.ndarray, size: int, margin: int = 0) -> tuple[int, int, int, int]:
    """Integer bounding box ``(x0, y0, x1, y1)`` (exclusive end) of the ``size`` crop in the
    source, ``margin`` source pixels wider on each side."""
    points = crop_corners(matrix, size)
    x0, y0 = np.floor(points.min(0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(0)).astype(int) + margin + 1
    return int(x0), int(y0), int(x1), int(y1)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, no reflection) mapping ``src`` onto ``dst``.

    Args:
        src: ``[N, 2]`` points.
        dst: ``[N, 2]`` points, same order.
    Returns:
        ``[2, 3]`` matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two [N>=2, 2] point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rotation = u @ d @ vt
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 0:
        raise ValueError("landmarks are degenerate (all points coincide)")
    scale = np.trace(np.diag(s) @ d) / src_var
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``[2, 3]`` affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Similarity that maps image pixel coordinates to the ``size`` crop's pixel coordinates."""
    return estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template_points(size))


def warp_plan(matrix: torch.Tensor, in_size: tuple[int, int]) -> tuple[tuple[int, int] | None, torch.Tensor]:
    """How :func:`warp_affine` samples a ``in_size`` source with ``matrix [B, 2, 3]`` (float64):
    ``(shrink, matrix)``, where ``shrink`` is the size the source is first reduced to with an
    antialiasing filter (``None`` when the warp shrinks by less than 2x, so bilinear sampling
    does not alias) and ``matrix`` maps that reduced source to the output."""
    batch = matrix.shape[0]
    height, width = in_size
    scale = float(torch.sqrt(torch.abs(torch.linalg.det(matrix[:, :, :2]))).min())
    if scale >= 0.5:
        return None, matrix
    # Pre-shrink by an integer-ish factor, then fold it into the matrix.
    factor = 1.0 / (2.0 * scale)
    new_h, new_w = max(1, round(height / factor)), max(1, round(width / factor))
    sx, sy = width / new_w, height / new_h
    # new pixel p' relates to old pixel p by p = (p' + 0.5) * s - 0.5
    to_old = torch.from_numpy(np.vstack([rescale_matrix(sx, sy), [0.0, 0.0, 1.0]]))
    m_full = torch.cat([matrix, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(batch, 1, 3)], 1)
    return (new_h, new_w), (m_full @ to_old)[:, :2]


def sampling_grid(matrix: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grid (``align_corners=False``) of the forward affine ``matrix [B, 2, 3]``
    (source pixels -> output pixels, float64) from a ``in_size`` source to ``out_size``.

    Plain bilinear sampling, no antialiasing: :func:`warp_affine` pre-shrinks strong
    reductions first. Returns ``[B, h, w, 2]`` float64.
    """
    batch = matrix.shape[0]
    height, width = in_size
    out_h, out_w = out_size
    m_full = torch.cat([matrix, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(batch, 1, 3)], 1)
    inverse = torch.linalg.inv(m_full)[:, :2]  # output pixel -> source pixel
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64), indexing="ij"
    )
    grid = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
    src = grid @ inverse.transpose(1, 2)  # [B, h*w, 2]
    # pixel centre convention -> grid_sample(align_corners=False) normalised coordinates
    norm = torch.stack([(2 * src[..., 0] + 1) / width - 1, (2 * src[..., 1] + 1) / height - 1], -1)
    return norm.reshape(batch, out_h, out_w, 2)


def warp_affine(
    image: torch.Tensor,
    matrix: np.ndarray | torch.Tensor,
    out_size: tuple[int, int],
    padding_mode: str = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``image`` with the forward affine ``matrix`` (source pixels -> output pixels).

    Bilinear sampling; when the warp shrinks the image by more than 2x the source is first
    downsampled with an antialiasing filter so that the output does not alias.

    Args:
        image: ``[B, C, H, W]`` float tensor.
        matrix: ``[2, 3]`` or ``[B, 2, 3]`` forward affine, in pixel coordinates.
        out_size: ``(height, width)`` of the output.
        padding_mode: how output pixels outside the source are filled (``grid_sample``'s
            ``"zeros"``, ``"border"`` or ``"reflection"``); ``valid`` marks them either way.
    Returns:
        ``(warped [B, C, h, w], valid [B, 1, h, w])`` where ``valid`` is 1 where the output
        pixel came from inside the source image and 0 where it is padding.
    """
    if image.ndim != 4:
        raise ValueError(f"expected image [B, C, H, W], got shape {tuple(image.shape)}")
    batch, _, height, width = image.shape
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.ndim == 2:
        m = m.expand(batch, 2, 3)
    if m.shape != (batch, 2, 3):
        raise ValueError(f"expected matrix [2, 3] or [{batch}, 2, 3], got {tuple(m.shape)}")
    shrink, m = warp_plan(m, (height, width))
    if shrink is not None:
        image = F.interpolate(image, size=shrink, mode="bilinear", antialias=True, align_corners=False)
        height, width = shrink
    norm = sampling_grid(m, (height, width), out_size).to(device=image.device, dtype=image.dtype)
    warped = F.grid_sample(image, norm, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    ones = torch.ones(batch, 1, height, width, dtype=image.dtype, device=image.device)
    valid = F.grid_sample(ones, norm, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped, (valid > 0.999).to(image.dtype)


def align_face(
    image: torch.Tensor, landmarks: np.ndarray, size: int, padding_mode: str = "reflection"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop the face with the given 5 landmarks to the model's template at ``size`` x ``size``.

    Where the crop leaves the photo it is filled from the photo itself (reflected by default),
    never black: an LR made from the crop must not show the model a frame of padding (a model
    draws dark "sunglasses" into it). ``valid`` says which pixels are the photo's own, so
    scores and losses can leave the rest out.

    Args:
        image: ``[C, H, W]`` or ``[1, C, H, W]`` float tensor in ``[0, 1]``.
        landmarks: ``[5, 2]`` landmarks in the image's pixel coordinates.
        size: output side in pixels.
    Returns:
        ``(face [C, size, size], valid [1, size, size])``; see :func:`warp_affine`.
    """
    batched = image if image.ndim == 4 else image.unsqueeze(0)
    face, valid = warp_affine(batched, alignment_matrix(landmarks, size), (size, size), padding_mode)
    return face[0], valid[0]
