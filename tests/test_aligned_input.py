"""Bring your own alignment: pre-aligned crops (``--aligned``) and a landmarks file
(``--landmarks``) run ``dapfsr evaluate`` and ``dapfsr adapt`` with no detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.evaluation.protocol import Domain, ProtocolError, read_landmarks
from facetools_dapfsr.metrics.image import psnr


@pytest.fixture(scope="module")
def celeba_domain(celeba_sample) -> Domain:
    folder = celeba_sample[0].parent
    return Domain.from_folder(folder, max_images=12)


@pytest.fixture(scope="module")
def aligned_folder(celeba_domain: Domain, tmp_path_factory) -> tuple:
    """Eight real CelebA faces cut to the template at 128 px, saved as PNG (what a user with
    their own aligner would have)."""
    folder = tmp_path_factory.mktemp("aligned")
    faces = []
    for index in range(8):
        face, _ = celeba_domain.load(index, 128)
        faces.append(face)
        array = (face.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"face_{index:02d}.png")
    return folder, torch.stack(faces)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    return model.save_pretrained(tmp_path_factory.mktemp("model"))


def test_aligned_crops_are_taken_as_they_are(aligned_folder) -> None:
    folder, faces = aligned_folder
    domain = Domain.from_folder(folder, aligned=True)
    assert len(domain) == 8 and domain.kind == "folder" and not domain.skipped
    # The template warp of a template crop is (up to resampling) the crop itself.
    loaded = torch.stack([domain.load(index, 128)[0] for index in range(8)])
    assert float(psnr(loaded, faces).mean()) > 40


def test_evaluate_aligned_runs_the_full_protocol_without_a_detector(
    aligned_folder, model_dir, tmp_path, weights_cache
) -> None:
    folder, _ = aligned_folder
    out = tmp_path / "report"
    code = main(
        [
            "evaluate", "--aligned", "--target", str(folder), "--model", str(model_dir), "--out", str(out),
            "--splits", "2", "--draws", "2", "--max-eval", "2", "--methods", "bicubic,source-only", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["protocol"]["splits"] == 2 and data["protocol"]["draws"] == 2
    assert len(data["draws"]) == 4 and data["summary"]["bicubic"]["psnr"] > 10


def test_a_landmarks_file_gives_the_points_and_bad_files_are_named(celeba_domain, tmp_path) -> None:
    images = celeba_domain.images[:3]
    csv = tmp_path / "points.csv"
    lines = ["name,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"]
    lines += [
        ",".join([image.path.split("/")[-1], *(f"{v:.3f}" for p in image.landmarks for v in p)]) for image in images
    ]
    csv.write_text("\n".join(lines) + "\n")
    given = read_landmarks(csv)
    assert sorted(given) == sorted(image.path.split("/")[-1] for image in images)
    folder = celeba_domain.images[0].path.rsplit("/", 1)[0]
    domain = Domain.from_folder(folder, landmarks=csv, max_images=12)
    assert len(domain) == 3
    for image in domain.images:
        original = next(i for i in images if i.path == image.path)
        assert np.allclose(image.landmarks, original.landmarks, atol=1e-3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a.png": [[1, 2], [3, 4]]}))
    with pytest.raises(ProtocolError, match=r"bad.json: the landmarks of 'a.png' are not five"):
        read_landmarks(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ProtocolError, match="broken.json: not valid JSON"):
        read_landmarks(tmp_path / "broken.json")


def test_adapt_aligned_needs_no_detector(aligned_folder, model_dir, tmp_path) -> None:
    folder, _ = aligned_folder
    # A flat grey square holds no face a detector could find: only --aligned makes it usable.
    exemplar = tmp_path / "grey.png"
    Image.new("RGB", (128, 128), (128, 128, 128)).save(exemplar)
    assert (
        main(
            ["adapt", "--exemplar", str(exemplar), "--model", str(model_dir), "--out", str(tmp_path / "a0"), "--quiet"]
        )
        == 2
    )
    code = main(
        ["adapt", "--aligned", "--exemplar", str(folder / "face_00.png"), "--model", str(model_dir),
         "--out", str(tmp_path / "a1"), "--steps", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "a1" / "adapter_model.safetensors").is_file()
    points = tmp_path / "points.json"
    points.write_text(
        json.dumps({"face_00.png": [[25.1, 27.7], [101.9, 27.7], [63.5, 71.2], [30.9, 114.1], [96.1, 114.1]]})
    )
    code = main(
        ["adapt", "--landmarks", str(points), "--exemplar", str(folder / "face_00.png"), "--model", str(model_dir),
         "--out", str(tmp_path / "a2"), "--steps", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"other.png": [[0, 0]] * 5}))
    assert (
        main(
            [
                "adapt",
                "--landmarks",
                str(wrong),
                "--exemplar",
                str(folder / "face_00.png"),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "a3"),
            ]
        )
        == 2
    )
