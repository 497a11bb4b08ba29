"""Convert the FFHQ face prior of the ``random-face`` wheel into a :class:`MobileStyleGANDecoder`
state dict.

The wheel ships MobileStyleGAN as OpenVINO IR (``random_face/data/{Mapping,Synthesis}Network``).
We read the IR ourselves (:mod:`facetools_dapfsr.weights.openvino_ir`) and walk its graph from
each style affine to the operations it modulates, so that every tensor is taken from where the
graph uses it (the noise maps, for instance, only have numeric names). The structure is checked
against the PyTorch port as we go, so an IR that differs fails loudly instead of converting into
a silently wrong model.

Beyond the exported weights, the state dict holds what the decoder needs and the export lacks,
all computed here, deterministically (fixed seeds, and one CPU thread: a parallel reduction may
sum in an order that depends on the thread count; two conversions were seen to differ in the last
bits of five tensors):

- ``w_mean``, ``w_std``: per-dimension W statistics over 10,000 mapped samples;
- ``frame_landmarks``: the FFHQ frame's mean 5-point landmarks (MTCNN on rendered faces), which
  place the model's HR crop in the frame;
- the early-exit to-image heads (512 and 256 px frames, whose last blocks run at reduced
  resolution): least-squares fits of the Haar coefficients of the box-downsampled full render,
  weighted to the region the HR crop reads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import crop_corners, resampled_points
from facetools_dapfsr.data.landmarks import DetectorSettings, LandmarkDetector
from facetools_dapfsr.models.decoder import Decoder
from facetools_dapfsr.models.mobilestylegan import (
    FRAME_SIZE,
    MAPPING_GAIN,
    NEGATIVE_SLOPE,
    NUM_WS,
    RENDER_SIZES,
    TO_IMG_SLOT,
    W_STAT_SAMPLES,
    W_STAT_SEED,
    MobileStyleGANDecoder,
    Modulation,
    StyledConv,
    ToWavelets,
    haar,
)
from facetools_dapfsr.weights.openvino_ir import IRModel, Layer

PACKAGE = "random-face"
DATA_DIR = Path("random_face") / "data"

CALIBRATION_SEED = 1
CALIBRATION_FACES = 32
"""Faces rendered at 1024 px to measure the frame landmarks and fit the early-exit heads. The
full renders dominate conversion time (about 1-2 s per face on two CPU cores); FFHQ frames are
aligned, so 32 faces pin the mean landmarks to well under a pixel."""
HEAD_RIDGE = 1e-4
"""Relative ridge regularisation of the head fits (keeps them well-posed on dead channels)."""
MTCNN_MIN_PROBABILITY = 0.99
CONVERSION_THREADS = 1
"""CPU threads of the computed tensors' arithmetic: fixed, so that every machine sums alike."""


@contextlib.contextmanager
def fixed_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Build the full :class:`MobileStyleGANDecoder` state dict from the unpacked wheel.

    Args:
        extracted: ``extracted["random-face"]`` is the root of the unpacked
            ``random-face==2021.7.21.1`` wheel.
    Returns:
        Every parameter and buffer of the decoder, float32, contiguous.
    """
    data = Path(extracted[PACKAGE]) / DATA_DIR
    state: dict[str, torch.Tensor] = {}
    state.update(_mapping_state(IRModel.load(data / "MappingNetwork.xml")))
    state.update(_synthesis_state(IRModel.load(data / "SynthesisNetwork.xml")))

    decoder = MobileStyleGANDecoder().eval()
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    computed = {"w_mean", "w_std", "frame_landmarks"} | {
        name for name in decoder.state_dict() if name.startswith("synthesis_network.exit_heads.")
    }
    if unexpected or set(missing) != computed:
        raise ValueError(
            f"IR does not match the decoder: unexpected {sorted(unexpected)}, missing {sorted(set(missing) - computed)}"
        )
    with torch.no_grad(), fixed_threads(CONVERSION_THREADS):
        # The base class measures the statistics; the decoder itself only returns stored ones.
        w_mean, w_std = Decoder.w_statistics(decoder, W_STAT_SAMPLES, seed=W_STAT_SEED)
        decoder.w_mean.copy_(w_mean)
        decoder.w_std.copy_(w_std)
        _calibrate(decoder)
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in decoder.state_dict().items()}


# -- mapping network -----------------------------------------------------------------------------
def _mapping_state(ir: IRModel) -> dict[str, torch.Tensor]:
    """8 x (MatMul [transpose_b], Add bias, PReLU, Multiply gain), after a pixel norm."""
    matmuls = [layer for layer in ir.topological_order() if layer.type == "MatMul"]
    state: dict[str, torch.Tensor] = {}
    for i, matmul in enumerate(matmuls):
        _expect(matmul.data.get("transpose_b") == "true", f"mapping {matmul.name}: expected transpose_b")
        add = _only_child(ir, matmul, "Add")
        bias = _const_feeding(ir, add, exclude=matmul)
        prelu = _only_child(ir, add, "PReLU")
        _expect_scalar(ir.input_const(prelu, 1), NEGATIVE_SLOPE, f"mapping {prelu.name} slope")
        gain = _only_child(ir, prelu, "Multiply")
        _expect_scalar(ir.input_const(gain, 1), MAPPING_GAIN, f"mapping {gain.name} gain")
        state[f"mapping_network.layers.{i}.weight"] = _tensor(ir.input_const(matmul, 1))
        state[f"mapping_network.layers.{i}.bias"] = _tensor(bias).reshape(-1)
    _expect(len(matmuls) == 8, f"mapping network has {len(matmuls)} linear layers, expected 8")
    return state


# -- synthesis network ---------------------------------------------------------------------------
def _module_prefix(ir_name: str) -> str:
    """IR modulation weight name -> our module prefix (``m.layers.3.conv1.conv.modulation.weight``
    -> ``synthesis_network.blocks.3.conv1``)."""
    parts = ir_name.split(".")
    if parts[:2] == ["m", "conv1"]:
        return "synthesis_network.conv1"
    if parts[:2] == ["m", "layers"] and parts[3] in ("up", "conv1", "conv2"):
        return f"synthesis_network.blocks.{parts[2]}.{parts[3]}"
    if parts[:2] == ["m", "layers"] and parts[3] == "to_img":
        return "synthesis_network.to_img"
    raise ValueError(f"unexpected modulation {ir_name!r} in the synthesis IR")


def _synthesis_state(ir: IRModel) -> dict[str, torch.Tensor]:
    reference = MobileStyleGANDecoder().synthesis_network
    modules = dict(reference.named_modules())
    style_input = ir.of_type("Parameter")
    _expect(len(style_input) == 1, "synthesis IR should have exactly one input")
    state: dict[str, torch.Tensor] = {"synthesis_network.const": _tensor(ir.const("m.input.input"))}
    seen: set[str] = set()
    for matmul in ir.children(style_input[0]):
        if matmul.type != "MatMul":
            continue
        weight_layer = ir.parent(matmul, 1)
        prefix = _module_prefix(weight_layer.name)
        module = modules[prefix.removeprefix("synthesis_network.")]
        seen.add(prefix)
        # Style: MatMul -> Add bias -> Reshape [1, C, 1, 1] -> (Multiply scale) -> Multiply x.
        add = _only_child(ir, matmul, "Add")
        reshape = _only_child(ir, add, "Reshape")
        scale_or_use = _only_child(ir, reshape, "Multiply")
        scale = 1.0
        if ir.parent(scale_or_use, 1).type == "Const" or ir.parent(scale_or_use, 0).type == "Const":
            const_index = 1 if ir.parent(scale_or_use, 1).type == "Const" else 0
            scale = float(ir.input_const(scale_or_use, const_index).reshape(()))
            use = _only_child(ir, scale_or_use, "Multiply")
        else:
            use = scale_or_use
        modulation: Modulation = module.modulation
        _expect(
            math.isclose(scale, modulation.scale, rel_tol=1e-5),
            f"{prefix}: style scale {scale} in the IR, {modulation.scale} in the port",
        )
        state[f"{prefix}.modulation.weight"] = _tensor(ir.const(weight_layer))
        state[f"{prefix}.modulation.bias"] = _tensor(_const_feeding(ir, add, exclude=matmul)).reshape(-1)
        if isinstance(module, StyledConv):
            state.update(_styled_conv_state(ir, use, prefix, module))
        elif isinstance(module, ToWavelets):
            conv = _only_child(ir, use, "Convolution")
            bias = _only_child(ir, conv, "Add")
            state[f"{prefix}.weight"] = _tensor(ir.input_const(conv, 1))
            state[f"{prefix}.bias"] = _tensor(_const_feeding(ir, bias, exclude=conv)).reshape(-1)
            _check_inverse_haar(ir, _only_child(ir, bias, "VariadicSplit"), prefix)
        else:  # WaveletUpsample
            _check_inverse_haar(ir, _only_child(ir, use, "VariadicSplit"), prefix)
    expected = {f"synthesis_network.{name}" for name, m in reference.named_modules() if isinstance(m, Modulation)}
    expected = {name.removesuffix(".modulation") for name in expected if ".exit_heads." not in name}
    _expect(seen == expected, f"modulations in the IR {sorted(seen ^ expected)} do not match the port")
    _expect(len(seen) == NUM_WS, f"expected {NUM_WS} style-modulated layers, found {len(seen)}")
    return state


def _styled_conv_state(ir: IRModel, use: Layer, prefix: str, module: StyledConv) -> dict[str, torch.Tensor]:
    """x * s -> [GroupConvolution dw ->] Convolution -> Add noise -> Add bias -> PReLU."""
    state: dict[str, torch.Tensor] = {}
    if module.separable:
        dw = _only_child(ir, use, "GroupConvolution")
        weight_dw = ir.input_const(dw, 1)  # [C, 1, 1, 3, 3]: groups, out/group, in/group, kh, kw
        state[f"{prefix}.weight_dw"] = _tensor(weight_dw).reshape(weight_dw.shape[0], 1, 3, 3)
        conv = _only_child(ir, dw, "Convolution")
        state[f"{prefix}.weight_pw"] = _tensor(ir.input_const(conv, 1))
    else:
        conv = _only_child(ir, use, "Convolution")
        state[f"{prefix}.weight"] = _tensor(ir.input_const(conv, 1))
    for layer in (conv, *([dw] if module.separable else [])):
        _expect(layer.data.get("strides") == "1, 1", f"{prefix}: {layer.name} is strided")
    noise_add = _only_child(ir, conv, "Add")
    state[f"{prefix}.noise"] = _tensor(_const_feeding(ir, noise_add, exclude=conv))
    bias_add = _only_child(ir, noise_add, "Add")
    state[f"{prefix}.bias"] = _tensor(_const_feeding(ir, bias_add, exclude=noise_add)).reshape(-1)
    prelu = _only_child(ir, bias_add, "PReLU")
    _expect_scalar(ir.input_const(prelu, 1), NEGATIVE_SLOPE, f"{prefix} slope")
    return state


def _check_inverse_haar(ir: IRModel, split: Layer, prefix: str) -> None:
    """Check the inverse DWT that follows ``split`` is the one
    :func:`~facetools_dapfsr.models.mobilestylegan.inverse_haar` computes.

    The export spells one level as transposed 2-tap convolutions: rows then columns, per band.
    ``split`` cuts the channels into LL and the details, which are reshaped to ``[C, 3, h, w]``
    and split again into bands 0, 1, 2. Band ``k`` must be synthesised with the filters below.
    """
    filters = {"g0": np.full(2, 1.0 / math.sqrt(2.0)), "g1": np.array([1.0, -1.0]) / math.sqrt(2.0)}
    expected = [("g0", "g0"), ("g1", "g0"), ("g0", "g1"), ("g1", "g1")]  # (rows, columns) of LL, 0, 1, 2
    inner = _only_child(ir, _only_child(ir, split, "Reshape"), "VariadicSplit")
    _expect(int(ir.input_const(inner, 1).reshape(())) == 2, f"{prefix}: detail bands not split on axis 2")
    squeezes = sorted((c for c in ir.children(inner) if c.type == "Squeeze"), key=lambda c: _port_into(c, inner))
    finals = set()
    for band, (source, (row_filter, col_filter)) in enumerate(zip([split, *squeezes], expected, strict=True)):
        rows = [c for c in ir.children(source) if c.type == "GroupConvolutionBackpropData"]
        _expect(len(rows) == 1, f"{prefix}: band {band} has no row synthesis")
        cols = _only_child(ir, _only_child(ir, rows[0], "Add"), "GroupConvolutionBackpropData")
        for conv, stride, name in ((rows[0], "2, 1", row_filter), (cols, "1, 2", col_filter)):
            taps = ir.input_const(conv, 1).reshape(-1, 2)
            _expect(
                conv.data.get("strides") == stride and np.allclose(taps, filters[name], atol=1e-6),
                f"{prefix}: band {band} is not synthesised with Haar filter {name} (strides {stride})",
            )
        finals.add(_only_child(ir, cols, "Add").id)
    _expect(len(finals) == 1, f"{prefix}: the four bands are not summed into one output")


# -- calibration: landmarks and early-exit heads -------------------------------------------------
def _calibration_batches(decoder: MobileStyleGANDecoder, batch_size: int = 4) -> Iterator[torch.Tensor]:
    """Broadcast W+ codes of the seeded calibration faces, in batches (same codes every call)."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    z = torch.randn(CALIBRATION_FACES, decoder.z_dim, generator=generator)
    for start in range(0, CALIBRATION_FACES, batch_size):
        w = decoder.mapping(z[start : start + batch_size])
        yield w.unsqueeze(1).expand(-1, NUM_WS, -1)


def _calibrate(decoder: MobileStyleGANDecoder) -> None:
    """Measure the frame landmarks on full renders, then fit the early-exit heads to them."""
    net = decoder.synthesis_network
    exits = [size for size in RENDER_SIZES if size != FRAME_SIZE]
    targets: dict[int, list[torch.Tensor]] = {size: [] for size in exits}
    small_frames: list[np.ndarray] = []
    for ws in _calibration_batches(decoder):
        frame = net(ws, FRAME_SIZE)
        for size in exits:
            # What the head must output: the Haar coefficients of the box-downsampled frame.
            targets[size].append(haar(F.avg_pool2d(frame, FRAME_SIZE // size)))
        small_frames.append(_to_uint8(F.avg_pool2d(frame, 2)))
    landmarks_512 = _mean_landmarks(np.concatenate(small_frames))
    # 512 px pixel coordinates -> 1024 px.
    decoder.frame_landmarks.copy_(torch.from_numpy(resampled_points(landmarks_512, 2.0)))

    for size in exits:
        head = net.head(size)
        # Start from the full network's to-image layer: same slot, same style affine; only the
        # 1x1 convolution is re-fitted to the features of the reduced-resolution tail.
        head.load_state_dict(net.to_img.state_dict())
        # Fit where the HR crop reads, and compute the features only there (a third of the cost).
        top, left, bottom, right = _crop_window(decoder, size)
        region = (2 * top, 2 * left, 2 * bottom, 2 * right)
        gram = torch.zeros(head.weight.shape[1] + 1, head.weight.shape[1] + 1, dtype=torch.float64)
        cross = torch.zeros(head.weight.shape[1] + 1, head.weight.shape[0], dtype=torch.float64)
        for ws, target in zip(_calibration_batches(decoder), targets[size], strict=True):
            x = net.features(ws, size, region) * head.modulation(ws[:, TO_IMG_SLOT])
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)  # constant channel: the bias
            x = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).double()
            y = target[:, :, top:bottom, left:right]
            y = y.permute(1, 0, 2, 3).reshape(y.shape[1], -1).double()
            gram += x @ x.T
            cross += x @ y.T
        _set_head(head, gram, cross)


def _crop_window(decoder: MobileStyleGANDecoder, size: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the wavelet pixels (half the frame's side) of a ``size``
    frame that the HR crop reads, with a margin of an eighth of the crop for its resampling."""
    # The margin is in crop pixels, so it spans more frame pixels the more the crop shrinks the
    # frame (crop_footprint's is in whole source pixels).
    corners = crop_corners(decoder.crop_matrix(size), decoder.resolution, margin=decoder.resolution / 8)
    # Frame pixel p lies in wavelet pixel p // 2.
    (left, top), (right, bottom) = np.floor(corners.min(0) / 2), np.ceil(corners.max(0) / 2) + 1
    side = size // 2
    return max(int(top), 0), max(int(left), 0), min(int(bottom), side), min(int(right), side)


def _set_head(head: ToWavelets, gram: torch.Tensor, cross: torch.Tensor) -> None:
    """Solve the (lightly ridge-regularised) least squares for the head's 1x1 convolution."""
    ridge = HEAD_RIDGE * torch.diagonal(gram)[:-1].mean()
    regulariser = torch.eye(gram.shape[0], dtype=gram.dtype) * ridge
    regulariser[-1, -1] = 0.0  # do not shrink the bias
    solution = torch.linalg.solve(gram + regulariser, cross)  # [C + 1, 12]
    head.weight.copy_(solution[:-1].T.reshape(head.weight.shape).float())
    head.bias.copy_(solution[-1].float())


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B, H, W, 3]`` uint8 RGB."""
    images = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()


def _mean_landmarks(images: np.ndarray) -> np.ndarray:
    """Mean MTCNN landmarks ``[5, 2]`` over the images where one face is found confidently."""
    side = images.shape[1]
    settings = DetectorSettings(min_face_size=side // 8, min_score=MTCNN_MIN_PROBABILITY, fallbacks=())
    detector = LandmarkDetector(settings)
    found: list[np.ndarray] = []
    for image in images:  # one at a time, as the converted prior was measured
        # The largest face: the FFHQ face is the large one in the middle.
        face = detector.detect([image], largest=True)[0]
        if face is not None:
            found.append(np.asarray(face[0], dtype=np.float64))
    if len(found) < len(images) // 2:
        raise RuntimeError(f"MTCNN found faces in only {len(found)} of {len(images)} prior renders")
    return np.mean(found, 0)


# -- helpers -------------------------------------------------------------------------------------
def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _port_into(layer: Layer, source: Layer) -> int:
    """The output port of ``source`` that feeds ``layer``."""
    return next(port for src, port in layer.inputs if src == source.id)


def _only_child(ir: IRModel, layer: Layer, type_name: str) -> Layer:
    matches = [child for child in ir.children(layer) if child.type == type_name]
    if len(matches) != 1:
        raise ValueError(f"IR layer {layer.name!r}: expected one {type_name} consumer, found {len(matches)}")
    return matches[0]


def _const_feeding(ir: IRModel, layer: Layer, exclude: Layer) -> np.ndarray:
    """The constant operand of a binary op (through a Reshape of a constant, as the IR has it)."""
    for src, _ in layer.inputs:
        if src == exclude.id:
            continue
        source = ir[src]
        if source.type == "Reshape" and ir.parent(source).type == "Const":
            return ir.input_const(source, 0)
        if source.type == "Const":
            return ir.const(source)
    raise ValueError(f"IR layer {layer.name!r} has no constant operand")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"unexpected OpenVINO IR: {message}")


def _expect_scalar(values: np.ndarray, expected: float, what: str) -> None:
    _expect(
        values.size == 1 and math.isclose(float(values.reshape(())), expected, rel_tol=1e-6),
        f"{what} is {values.ravel()[:4]}, expected {expected}",
    )
