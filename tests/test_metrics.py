"""Metrics and feature losses, with the real converted weights and real CelebA faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.losses import VGGFeatures, feature_mean_std, perceptual_loss, style_loss
from facetools_dapfsr.metrics import LPIPS, FaceQuality, psnr, ssim

# Mean MTCNN landmarks of CelebA's aligned images (measured on 8 test images): the aligned data
# set puts every face in nearly the same place, so they stand in for per-image detection.
CELEBA_LANDMARKS = np.array([[70.1, 112.4], [109.7, 111.7], [87.4, 136.9], [71.3, 153.8], [106.9, 152.6]])
CELEBA_FILES = ("10006_189872.jpg", "10027_197859.jpg", "10054_193111.jpg")


def _load_rgb(path: Path) -> torch.Tensor:
    """``[1, 3, H, W]`` in ``[0, 1]``."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


@pytest.fixture(scope="module")
def celeba_faces(data_dir: Path) -> torch.Tensor:
    """Three real faces aligned to the model's 128x128 template, ``[3, 3, 128, 128]``."""
    faces = []
    for name in CELEBA_FILES:
        path = data_dir / "celeba" / "test" / name
        if not path.is_file():
            pytest.skip(f"{path} not found")
        face, valid = align_face(_load_rgb(path), CELEBA_LANDMARKS, 128)
        assert valid.min() == 1  # the template crop lies inside CelebA's frame
        faces.append(face.clamp(0, 1))
    return torch.stack(faces)


def _bicubic_16_to_128(x: torch.Tensor) -> torch.Tensor:
    lr = F.interpolate(x, size=(16, 16), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype)
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# -- PSNR / SSIM ----------------------------------------------------------------------------


def test_psnr_of_identical_images_is_the_cap() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(psnr(x, x), torch.full((2,), 100.0))
    assert psnr(x, x, cap=60.0).tolist() == [60.0, 60.0]
    assert psnr(x[0], x[0]).ndim == 0


def test_psnr_known_value_and_mask() -> None:
    x = torch.full((1, 3, 16, 16), 0.5)
    y = x + 0.1  # MSE = 0.01 -> 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(x * 255, y * 255, max_val=255.0).item() == pytest.approx(20.0, abs=1e-4)
    z = y.clone()
    z[..., :8] = 1.0  # damage only the masked-out half
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1
    assert psnr(x, z, mask=mask).item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_identical_is_one_and_drops_with_noise() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 48, 48)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(ssim(x, x, grey=True), torch.ones(2), atol=1e-6)
    mild = ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1))
    strong = ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1))
    assert (strong < mild).all() and (mild < 1).all()
    mask = torch.ones(1, 1, 48, 48)
    mask[..., :20] = 0
    damaged = x.clone()
    damaged[..., :20] = 0
    assert torch.allclose(ssim(x, damaged, mask=mask), torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# -- VGG features and losses ----------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg(weights_cache: Path) -> VGGFeatures:
    return VGGFeatures.from_weights_cache(progress=False)


@pytest.mark.slow
def test_vgg_feature_shapes_and_losses(vgg: VGGFeatures) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)
    features = vgg(x)
    assert [tuple(f.shape) for f in features] == [
        (2, 64, 128, 128),
        (2, 128, 64, 64),
        (2, 256, 32, 32),
        (2, 512, 16, 16),
    ]
    assert all(not p.requires_grad for p in vgg.parameters())
    assert perceptual_loss(x, x, vgg).item() == 0.0
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    loss = perceptual_loss(y, x, vgg)
    loss.backward()
    assert loss.item() > 0 and y.grad is not None and y.grad.abs().sum() > 0
    stats = feature_mean_std(features)
    assert [tuple(m.shape) for m, _ in stats] == [(2, 64), (2, 128), (2, 256), (2, 512)]
    assert all((s > 0).all() for _, s in stats)
    assert style_loss(features, features).item() == 0.0
    assert style_loss(features, [f[:1] for f in features]).item() > 0  # one exemplar, broadcast


# -- LPIPS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_vgg(weights_cache: Path) -> LPIPS:
    return LPIPS.from_weights_cache("vgg", progress=False)


@pytest.mark.slow
def test_lpips_of_identical_images_is_zero(lpips_vgg: LPIPS) -> None:
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(lpips_vgg(x, x), torch.zeros(2))
    grey = torch.rand(1, 1, 64, 64)
    assert lpips_vgg(grey, grey).item() == 0.0


@pytest.mark.slow
def test_lpips_grows_with_blur(lpips_vgg: LPIPS, celeba_faces: torch.Tensor) -> None:
    face = celeba_faces[:1]
    distances = [lpips_vgg(face, _gaussian_blur(face, sigma)).item() for sigma in (0.5, 1.0, 2.0, 4.0)]
    assert distances == sorted(distances) and distances[0] > 0, distances


@pytest.mark.slow
@pytest.mark.parametrize("net", ["vgg", "alex"])
@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips calls torchvision's old API
def test_lpips_matches_the_reference_package(net: str, weights_cache: Path, celeba_faces: torch.Tensor) -> None:
    lpips = pytest.importorskip("lpips")
    ours = LPIPS.from_weights_cache(net, progress=False)
    reference = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False).eval()
    # Same tensors under the reference's names: trunk index i lives in the slice of its tap.
    state = {}
    for key, value in ours.state_dict().items():
        kind, index, param = key.split(".")
        if kind == "trunk":
            slice_number = next(k for k, tap in enumerate(ours.taps) if int(index) <= tap) + 1
            state[f"net.slice{slice_number}.{index}.{param}"] = value
        else:
            state[f"lin{index}.model.1.{param}"] = value
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected
    # Only the scaling constants and the ``lins`` aliases of ``lin0..4`` are not loaded.
    assert all(k.startswith(("scaling_layer.", "lins.")) for k in missing)

    torch.manual_seed(0)
    x = celeba_faces
    y = torch.cat([_gaussian_blur(x[:1], 2.0), (x[1:2] + 0.1 * torch.randn_like(x[1:2])).clamp(0, 1), x[:1]])
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten()
        actual = ours(x, y)
    assert torch.allclose(actual, expected, atol=1e-5), (actual, expected)


# -- face quality ---------------------------------------------------------------------------


@pytest.mark.slow
def test_face_quality_prefers_real_faces_to_bicubic(weights_cache: Path, celeba_faces: torch.Tensor) -> None:
    quality = FaceQuality.from_weights_cache(progress=False)
    with torch.no_grad():
        hr = quality(celeba_faces)
        bicubic = quality(_bicubic_16_to_128(celeba_faces))
    assert hr.shape == (3,)
    # Measured: aligned HR about 0.6-0.7, their 16->128 bicubic about 0.35-0.4.
    assert (hr > bicubic + 0.15).all(), (hr, bicubic)
    assert ((hr > 0) & (hr < 1.2)).all()


# -- identity (dlib face descriptor) ------------------------------------------------------------

SAME_PEOPLE = (
    ("10054_193111.jpg", "10054_193164.jpg"),
    ("10066_184842.jpg", "10066_190774.jpg"),
    ("10090_191487.jpg", "10090_199944.jpg"),
    ("10101_196994.jpg", "10101_201655.jpg"),
    ("10102_187880.jpg", "10102_190983.jpg"),
    ("10105_188559.jpg", "10105_200442.jpg"),
)


def test_identity_descriptor_tells_people_apart_on_template_crops(
    data_dir: Path, weights_cache: Path, tmp_path: Path
) -> None:
    pytest.importorskip("dlib", reason="the identity extra (dlib-bin) is not installed")
    from facetools_dapfsr.data.faces import AlignedFaces
    from facetools_dapfsr.metrics.identity import SAME_PERSON_THRESHOLD, IdentityDescriptor

    folder = tmp_path / "people"
    folder.mkdir()
    for name in (name for pair in SAME_PEOPLE for name in pair):
        (folder / name).symlink_to(data_dir / "celeba" / "test" / name)
    faces = AlignedFaces.prepare(str(folder), 128, cache_path=tmp_path / "landmarks.json")
    assert len(faces) == 2 * len(SAME_PEOPLE)
    crops = {Path(faces.path(i)).name: faces[i][0] for i in range(len(faces))}
    first = torch.stack([crops[a] for a, _ in SAME_PEOPLE])
    second = torch.stack([crops[b] for _, b in SAME_PEOPLE])
    descriptor = IdentityDescriptor.from_weights_cache(progress=False)
    same = descriptor.distance(first, second)
    different = descriptor.distance(first, second.roll(1, 0))
    assert float(same.max()) < float(different.min()), (same, different)
    assert (same < SAME_PERSON_THRESHOLD).float().mean() >= 0.8
    assert (different > SAME_PERSON_THRESHOLD).all()
    # A face is its own best match; the descriptor of a grey face is still computed (3 channels).
    assert float(descriptor.distance(first, first).max()) < 1e-5
    assert descriptor.descriptors(first[:, :1]).shape == (len(SAME_PEOPLE), 128)


def test_identity_without_dlib_says_which_extra_to_install(monkeypatch) -> None:
    import sys

    from facetools_dapfsr.metrics.identity import IdentityUnavailableError, import_dlib, is_available

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if the extra were not installed
    assert not is_available()
    with pytest.raises(IdentityUnavailableError, match=r"facetools-dapfsr\[identity\]"):
        import_dlib()
