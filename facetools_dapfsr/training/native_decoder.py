"""The native StyleGAN2 decoder checkpoint that ``recipes/train_decoder.py`` writes.

A folder with ``config.json`` (a :class:`~facetools_dapfsr.config.StyleGAN2Config` plus its
``type``) and ``model.safetensors`` holding the trained generator (``generator.*``) and its
exponential moving average (``generator_ema.*``, the one to use as a prior). The encoder recipe
loads it with ``--decoder PATH``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from facetools_dapfsr.config import StyleGAN2Config
from facetools_dapfsr.fileio import atomic_path, atomic_write_text
from facetools_dapfsr.models.stylegan2 import StyleGAN2Generator

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREFIXES = ("generator", "generator_ema")


def save_native_decoder(
    directory: str | Path, generator: StyleGAN2Generator, generator_ema: StyleGAN2Generator
) -> Path:
    """Write the decoder folder (weights in float32)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, module in zip(PREFIXES, (generator, generator_ema), strict=True):
        for name, tensor in module.state_dict().items():
            tensors[f"{prefix}.{name}"] = tensor.detach().float().cpu().contiguous()
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model_type": "dapfsr-native-decoder"})
    config = {"type": StyleGAN2Config.type, **dataclasses.asdict(generator.config)}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_native_decoder_config(directory: str | Path) -> StyleGAN2Config:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a native decoder folder (no {CONFIG_NAME})")
    return _parse_stylegan2_config(json.loads(path.read_text()), str(path))


def load_native_decoder(directory: str | Path, ema: bool = True) -> StyleGAN2Generator:
    """The generator (``ema=True``: its moving average) of a decoder folder, in eval mode."""
    config = read_native_decoder_config(directory)
    tensors = load_file(str(Path(directory) / WEIGHTS_NAME))
    prefix = (PREFIXES[1] if ema else PREFIXES[0]) + "."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    generator = StyleGAN2Generator(config)
    generator.load_state_dict(state, strict=True)
    return generator.eval()


def stylegan2_config_from(name_or_path: str) -> StyleGAN2Config:
    """A generator config from a DAP-FSR preset name (its decoder), a StyleGAN2Config JSON file
    (as written in a decoder folder) or a DAP-FSR config JSON file (its decoder)."""
    from facetools_dapfsr.config import DAPFSRConfig

    if name_or_path in DAPFSRConfig.PRESETS:
        decoder = DAPFSRConfig.from_preset(name_or_path).decoder
    else:
        path = Path(name_or_path)
        if path.is_dir():
            return read_native_decoder_config(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name_or_path} is neither a preset ({', '.join(DAPFSRConfig.PRESETS)}) nor a file"
            )
        data = json.loads(path.read_text())
        if data.get("model_type") == "dapfsr":
            decoder = DAPFSRConfig.from_dict(data).decoder
        else:
            return _parse_stylegan2_config(data, str(path))
    if not isinstance(decoder, StyleGAN2Config):
        raise ValueError(  # noqa: TRY004  (a wrong config value, not a wrong argument type)
            f"{name_or_path}: its decoder is {type(decoder).__name__}, not a native StyleGAN2 generator"
        )
    return decoder


def _parse_stylegan2_config(data: dict, where: str) -> StyleGAN2Config:
    data = dict(data)
    kind = data.pop("type", StyleGAN2Config.type)
    if kind != StyleGAN2Config.type:
        raise ValueError(f"{where}: decoder type {kind!r} is not a native StyleGAN2 decoder")
    known = {f.name for f in dataclasses.fields(StyleGAN2Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return StyleGAN2Config(**data)
