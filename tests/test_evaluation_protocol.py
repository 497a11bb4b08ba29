"""The cross-domain protocol on real faces: Yale B illumination splits, generic folder splits,
exemplar draws that never leak into the evaluation set, determinism of draws and LR inputs, and
the metrics' reference values."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facetools_dapfsr.evaluation.protocol import (
    Domain,
    FaceStore,
    ProtocolConfig,
    ProtocolError,
    draw_exemplars,
    light_angle,
    make_lr,
    make_splits,
)
from facetools_dapfsr.evaluation.runner import PSNR_CAP_DB, Scorer
from facetools_dapfsr.metrics import psnr, ssim


@pytest.fixture(scope="module")
def yaleb(yaleb_subset: Path, weights_cache: Path) -> Domain:
    return Domain.from_folder(yaleb_subset)


@pytest.fixture(scope="module")
def celeba_folder(celeba_sample: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("celeba")
    for path in celeba_sample:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def celeba(celeba_folder: Path, weights_cache: Path) -> Domain:
    return Domain.from_folder(celeba_folder)


def test_light_angle_reference_values() -> None:
    assert light_angle("A+000E+00") == pytest.approx(0.0)
    assert light_angle("A+090E+00") == pytest.approx(90.0)
    assert light_angle("A-035E+40") == pytest.approx(light_angle("A+035E-40"))
    with pytest.raises(ValueError):
        light_angle("frontal")


def test_yaleb_is_recognised_with_one_landmark_set_per_subject(yaleb: Domain) -> None:
    assert yaleb.kind == "yaleb"
    assert len(yaleb) == 36 and not yaleb.skipped
    for subject in ("yaleB01", "yaleB02", "yaleB03"):
        landmarks = {item.landmarks for item in yaleb.images if item.identity == subject}
        assert len(landmarks) == 1  # detected once on the frontal-lit image, reused for all
    assert yaleb.is_grey()
    face, valid = yaleb.load(0, 32)
    assert face.shape == (3, 32, 32) and valid.shape == (1, 32, 32)
    # the template was chosen to fit inside Yale B's tight crops: little padding
    assert 1 - valid.mean().item() < 0.1


def test_yaleb_landmarks_per_image_are_an_option(yaleb_subset: Path, yaleb: Domain) -> None:
    per_image = Domain.from_folder(yaleb_subset, yaleb_landmarks="image")
    assert per_image.kind == "yaleb" and len(per_image) >= 30  # a dark illumination may be missed
    by_path = {item.path: item for item in yaleb.images}
    found_subjects = {item.identity for item in per_image.images}
    assert found_subjects == {item.identity for item in yaleb.images}
    frontal = [item for item in per_image.images if "A+000E+00" in item.path]
    assert frontal, "the frontal-lit images are found directly"
    for item in frontal:  # the same detection as the per-subject landmarks
        assert item.landmarks == by_path[item.path].landmarks
    errors = [
        float(np.hypot(*np.subtract(item.landmarks, by_path[item.path].landmarks).T).mean())
        for item in per_image.images
    ]
    # Every other image gets its own points, near the subject's (Yale B is pixel-registered).
    assert len({item.landmarks for item in per_image.images}) > len(found_subjects)
    assert np.median(errors) < 12
    assert [i.path for i in per_image.images] == [
        i.path for i in yaleb.images if i.path in {j.path for j in per_image.images}
    ]
    with pytest.raises(ValueError, match="yaleb_landmarks"):
        ProtocolConfig(yaleb_landmarks="pixel")


def test_yaleb_splits_are_groups_of_illumination_conditions(yaleb: Domain) -> None:
    splits = make_splits(yaleb, 4, seed=0)
    assert sorted(i for split in splits for i in split) == list(range(len(yaleb)))
    conditions = [{yaleb.images[i].condition for i in split} for split in splits]
    for a in range(len(splits)):
        for b in range(a + 1, len(splits)):
            assert not conditions[a] & conditions[b]
        # every subject appears under every condition of the split
        assert len(splits[a]) == 3 * len(conditions[a])
    angles = [sorted(light_angle(c) for c in group) for group in conditions]
    for earlier, later in itertools.pairwise(angles):
        assert earlier[-1] <= later[0]  # sorted by light angle
    with pytest.raises(ProtocolError):
        make_splits(yaleb, 13, seed=0)  # only 12 conditions


def test_exemplar_never_leaks_into_the_evaluation_set(yaleb: Domain) -> None:
    config = ProtocolConfig(splits=3, draws=5, seed=1)
    splits = make_splits(yaleb, config.splits, config.seed)
    draws = list(draw_exemplars(yaleb, splits, config))
    assert len(draws) == 15
    for draw in draws:
        members = set(splits[draw.split])
        assert draw.exemplar in members
        assert set(draw.evaluation) <= members
        assert draw.exemplar not in draw.evaluation
        # Yale B: no other image of the exemplar's subject either
        subject = yaleb.images[draw.exemplar].identity
        assert all(yaleb.images[i].identity != subject for i in draw.evaluation)
        assert len(draw.evaluation) == len(members) * 2 // 3


def test_protocol_is_deterministic_for_a_seed(yaleb: Domain) -> None:
    def run(seed: int) -> list:
        config = ProtocolConfig(splits=3, draws=4, seed=seed, max_eval_images=5)
        return list(draw_exemplars(yaleb, make_splits(yaleb, 3, seed), config))

    assert run(0) == run(0)
    assert [d.exemplar for d in run(0)] != [d.exemplar for d in run(7)]
    assert all(len(d.evaluation) == 5 for d in run(0))
    hr, _ = yaleb.load(3, 32)
    config = ProtocolConfig(seed=0)
    lr = make_lr(hr, 3, 16, config)
    assert lr.shape == (3, 16, 16)
    assert torch.equal(lr, make_lr(hr, 3, 16, config))
    assert not torch.equal(lr, make_lr(hr, 3, 16, ProtocolConfig(seed=1)))
    # the same face gets the same LR through the store, whatever the draw
    store = FaceStore(yaleb, 32, 16, config)
    assert torch.equal(store.get(3)[2], lr)


def test_generic_folder_splits_at_random_and_excludes_the_exemplar(celeba: Domain) -> None:
    assert celeba.kind == "folder" and len(celeba) >= 10
    assert not celeba.is_grey()
    splits = make_splits(celeba, 3, seed=0)
    assert sorted(i for s in splits for i in s) == list(range(len(celeba)))
    assert splits == make_splits(celeba, 3, seed=0)
    assert splits != make_splits(celeba, 3, seed=5)
    for draw in draw_exemplars(celeba, splits, ProtocolConfig(splits=3, draws=3)):
        assert draw.exemplar not in draw.evaluation
        assert len(draw.evaluation) == len(splits[draw.split]) - 1
    with pytest.raises(ProtocolError):
        make_splits(celeba, len(celeba), seed=0)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="no such folder"):
        Domain.from_folder(tmp_path / "nowhere")


def test_metric_reference_values(weights_cache: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    # identical images: PSNR is capped (documented: 100 dB), SSIM is exactly 1
    assert psnr(x, x).tolist() == [100.0, 100.0]
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    # a uniform error of 0.1 is an MSE of 0.01: 20 dB
    assert psnr(torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.1)).item() == pytest.approx(20.0, abs=1e-4)
    scorer = Scorer.from_weights_cache(grey=True)
    valid = torch.ones(2, 1, 32, 32)
    scores = scorer.score(x, x, valid)
    assert scores["psnr"] == [PSNR_CAP_DB, PSNR_CAP_DB]
    assert scores["ssim"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert scores["lpips"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert all(0.0 < q < 1.5 for q in scores["face_quality"])
    # padding is excluded: a wrong padded border does not change PSNR
    damaged = x.clone()
    damaged[:, :, :4] = 0
    valid[:, :, :4] = 0
    assert scorer.score(damaged, x, valid)["psnr"] == [PSNR_CAP_DB, PSNR_CAP_DB]
