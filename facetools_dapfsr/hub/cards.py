"""Model cards (the ``README.md`` of a model or adapter folder), rendered from ``hub_cards/``.

A base model carries :class:`ModelCardInfo` (how it was trained and what it measured), saved as
``model_card.json`` next to its weights, so that a model loaded and saved again keeps its card.
"""

from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facetools_dapfsr.models.dapfsr import DAPFSR

CARD_INFO_NAME = "model_card.json"
README_NAME = "README.md"
NOT_RECORDED = "not recorded"

# Licence paragraphs by decoder type: the weights a model is built from set its terms.
PRIOR_LICENCE = """\
- **Decoder (face prior)**: MobileStyleGAN distilled from NVIDIA's StyleGAN2 trained on FFHQ,
  imported from the PyPI package `random-face==2021.7.21.1` at run time (never stored in this
  repo). StyleGAN2-FFHQ weights are released for **non-commercial** use only (NVIDIA Source Code
  License-NC; FFHQ images are CC BY-NC-SA 4.0)."""
CELEBA_LICENCE = """\
- **Training data**: CelebA (Liu et al., ICCV 2015) is available for **non-commercial research
  purposes only**; the encoder weights were trained on it."""
NATIVE_LICENCE = """\
- **Decoder**: a native StyleGAN2 generator trained with this project's recipe; its terms are those
  of the data it was trained on (see Training data)."""
NON_COMMERCIAL = """\
- The facetools-dapfsr code licence does not cover these weights. Together, they may be used for
  non-commercial research and evaluation only."""


@dataclass
class ModelCardInfo:
    """Facts about how a model was made, written into its card."""

    training_data: str = NOT_RECORDED
    """What the encoder was trained on (dataset, split, how many faces)."""
    training_procedure: str = NOT_RECORDED
    """Steps, batch, learning rate, losses, hardware, time."""
    training_command: str = NOT_RECORDED
    """The command that reproduces the training run."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """Rows ``{"benchmark", "method", "psnr", "ssim", "lpips", "face_quality", "identity_distance",
    "identity_verified", "command"}`` measured on this model (missing keys print as "-")."""
    trained_on_celeba: bool = False
    """Adds CelebA's non-commercial terms to the licence section."""

    def to_json_string(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelCardInfo:
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of model-card fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown model-card field(s) {', '.join(unknown)}")
        return cls(**data)


def card_template(name: str) -> str:
    """A model-card template shipped in ``facetools_dapfsr.hub_cards`` (the repo's ``hub_cards/``)."""
    return resources.files("facetools_dapfsr.hub_cards").joinpath(name).read_text(encoding="utf-8")


def is_non_commercial(decoder_type: str | None, trained_on_celeba: bool) -> bool:
    """Weights built on the FFHQ prior or trained on CelebA inherit non-commercial terms."""
    return decoder_type == "mobilestylegan" or trained_on_celeba


def licence_section(decoder_type: str | None, trained_on_celeba: bool) -> str:
    """The licence bullet list for a model (or adapter) built on ``decoder_type``."""
    parts = []
    if decoder_type == "mobilestylegan":
        parts.append(PRIOR_LICENCE)
    elif decoder_type == "stylegan2":
        parts.append(NATIVE_LICENCE)
    else:
        parts.append("- **Decoder**: not recorded; check the base model's card.")
    if trained_on_celeba:
        parts.append(CELEBA_LICENCE)
    if is_non_commercial(decoder_type, trained_on_celeba):
        parts.append(NON_COMMERCIAL)
    return "\n".join(parts)


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """The card's metrics as a Markdown table, each row with the command that measured it."""
    if not rows:
        return "No evaluation recorded for this model yet."

    def number(row: dict[str, Any], key: str, digits: int) -> str:
        value = row.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    lines = [
        "| benchmark | method | PSNR (dB) | SSIM | LPIPS | face quality | identity distance | same person |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.get('benchmark', '?')} | {row.get('method', '?')} | {number(row, 'psnr', 2)} "
            f"| {number(row, 'ssim', 3)} | {number(row, 'lpips', 3)} | {number(row, 'face_quality', 3)} "
            f"| {number(row, 'identity_distance', 3)} | {number(row, 'identity_verified', 2)} |"
        )
    commands = sorted({row["command"] for row in rows if row.get("command")})
    if commands:
        lines += ["", "Measured with:", "", "```bash", *commands, "```"]
    return "\n".join(lines)


def render_model_card(model: DAPFSR) -> str:
    """README.md of a base-model folder: ``hub_cards/base_model.md`` with the model's facts."""
    from facetools_dapfsr import __version__
    from facetools_dapfsr.config import MobileStyleGANConfig
    from facetools_dapfsr.hub.checkpoint import stored_state_dict

    config = model.config
    info = model.card_info
    encoder = config.encoder
    stored = sum(tensor.numel() for tensor in stored_state_dict(model).values())
    decoder = (
        f"imported FFHQ prior (MobileStyleGAN), frame rendered at {config.decoder.render_size} px"
        if isinstance(config.decoder, MobileStyleGANConfig)
        else f"native StyleGAN2, {config.decoder.resolution} px"
    )
    values = {
        "lr_size": str(config.lr_size),
        "hr_size": str(config.hr_size),
        "scale": str(config.scale),
        "encoder": f"ResNet-{encoder.depth} (stem width {encoder.base_width}), pyramid {encoder.pyramid_channels}, "
        f"ALE hidden {encoder.ale_hidden}, ISTN at {list(encoder.istn_stages)}",
        "decoder": decoder,
        "stored_parameters": f"{stored / 1e6:.2f} M",
        "training_data": info.training_data,
        "training_procedure": info.training_procedure,
        "training_command": info.training_command,
        "metrics": metrics_table(info.metrics),
        "licence": licence_section(config.decoder.type, info.trained_on_celeba),
        "license_metadata": "license: other\nlicense_name: non-commercial-research\n"
        if is_non_commercial(config.decoder.type, info.trained_on_celeba)
        else "",
        "library_version": __version__,
    }
    return string.Template(card_template("base_model.md")).substitute(values)
