"""Synthetic training pairs from the face prior: W+ codes with the HR face they render.

The prior generates unlimited faces whose codes are known, so an encoder can learn a direct
regression onto the code (a loss in the normalised space of Eq. 2, ``(w - mu) / sigma``) without
rendering the prior in its training step: about 25x cheaper per sample than the image loss
through the frozen decoder. Each pair is rendered once and stored; the LR input is made on the
fly from the stored HR face by the degradation model, so every epoch sees new misalignments.

Codes: ``w = mapping(z)``, ``z ~ N(0, I)``; with probability ``mixing_probability`` a second
``w`` takes over from a random slot on (StyleGAN's style mixing), so that the encoder sees every
W+ slot vary independently of its neighbours, as encodings of real faces do.

On disk (``out_dir``)::

    synthetic_pairs.json        settings, seed, decoder identity, shards written
    shard_00000/ ...            ``datasets`` shards (save_to_disk), one per ``shard_size`` pairs

A shard is written to a temporary folder and renamed when complete; generation resumes at the
first missing shard and every shard is seeded from (seed, shard index), so an interrupted and
resumed run writes the same pairs as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from facetools_dapfsr.fileio import atomic_write_text
from facetools_dapfsr.models.decoder import Decoder
from facetools_dapfsr.seeding import derive_seed

METADATA_NAME = "synthetic_pairs.json"
FORMAT_VERSION = 1


class SyntheticPairsError(ValueError):
    """A synthetic-pair folder that cannot be used (missing, incomplete, other settings)."""


@dataclass
class SyntheticPairsConfig:
    """How the pairs are drawn; saved in the folder's metadata (a resumed run must match)."""

    num_pairs: int = 10_000
    seed: int = 0
    mixing_probability: float = 0.9
    """Share of pairs whose W+ switches to a second code from a random slot on."""
    truncation: float = 1.0
    """``w = mu + psi (w - mu)``: below 1 trades diversity for typical faces (1: none)."""
    shard_size: int = 500
    """Pairs per stored shard (the unit of resumption)."""
    render_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.num_pairs < 1 or self.shard_size < 1 or self.render_batch_size < 1:
            raise ValueError("num_pairs, shard_size and render_batch_size must be at least 1")
        if not 0.0 <= self.mixing_probability <= 1.0:
            raise ValueError(f"mixing_probability must be in [0, 1], got {self.mixing_probability}")
        if not 0.0 < self.truncation <= 1.0:
            raise ValueError(f"truncation must be in (0, 1], got {self.truncation}")

    @property
    def num_shards(self) -> int:
        return -(-self.num_pairs // self.shard_size)


def decoder_identity(decoder: Decoder) -> dict[str, Any]:
    """What the pairs depend on: the decoder's kind, its config and its output size."""
    config = getattr(decoder, "config", None)
    return {
        "class": type(decoder).__name__,
        "config": dataclasses.asdict(config)
        if dataclasses.is_dataclass(config) and not isinstance(config, type)
        else None,
        "num_ws": decoder.num_ws,
        "w_dim": decoder.w_dim,
        "resolution": decoder.resolution,
    }


@torch.no_grad()
def sample_codes(
    decoder: Decoder, count: int, config: SyntheticPairsConfig, generator: torch.Generator, w_mean: torch.Tensor
) -> torch.Tensor:
    """``count`` W+ codes ``[count, num_ws, w_dim]`` on the CPU (style-mixed with
    ``mixing_probability``, truncated towards ``w_mean`` by ``truncation``)."""
    device = next(decoder.parameters()).device
    z = torch.randn(2 * count, decoder.z_dim, generator=generator)
    w = decoder.mapping(z.to(device)).float().cpu()
    w = w_mean + config.truncation * (w - w_mean)
    first, second = w[:count], w[count:]
    mixed = torch.rand(count, generator=generator) < config.mixing_probability
    # Crossover slot in 1..num_ws-1: slots before it take the first code, the rest the second.
    crossover = torch.randint(1, decoder.num_ws, (count,), generator=generator)
    crossover = torch.where(mixed, crossover, torch.full_like(crossover, decoder.num_ws))
    slots = torch.arange(decoder.num_ws)
    take_second = (slots[None, :] >= crossover[:, None]).unsqueeze(-1)
    return torch.where(take_second, second[:, None, :], first[:, None, :])


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def _read_metadata(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / METADATA_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SyntheticPairsError(f"{path}: not valid JSON ({error})") from error


def generate_synthetic_pairs(
    decoder: Decoder, out_dir: str | Path, config: SyntheticPairsConfig, show_progress: bool = True
) -> Path:
    """Render ``config.num_pairs`` (W+, HR face) pairs into ``out_dir``; resumes if interrupted.

    Raises:
        SyntheticPairsError: ``out_dir`` holds pairs made with other settings or another decoder.
    """
    from datasets import Array2D, Array3D, Dataset, Features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = decoder_identity(decoder)
    settings = dataclasses.asdict(config)
    existing = _read_metadata(out_dir)
    if existing is not None and (existing.get("settings") != settings or existing.get("decoder") != identity):
        raise SyntheticPairsError(
            f"{out_dir} holds synthetic pairs made with other settings or another decoder "
            f"({existing.get('settings')}); choose another folder or delete it"
        )
    size = decoder.resolution
    features = Features(
        {
            "ws": Array2D(shape=(decoder.num_ws, decoder.w_dim), dtype="float16"),
            "hr": Array3D(shape=(size, size, 3), dtype="uint8"),
        }
    )
    w_mean = decoder.w_statistics()[0].float().cpu()
    device = next(decoder.parameters()).device
    done = [i for i in range(config.num_shards) if (out_dir / _shard_name(i)).is_dir()]

    def write_metadata(shards: int) -> None:
        atomic_write_text(
            out_dir / METADATA_NAME,
            json.dumps(
                {"format_version": FORMAT_VERSION, "settings": settings, "decoder": identity, "shards_written": shards},
                indent=2,
                sort_keys=True,
            )
            + "\n",
        )

    write_metadata(len(done))
    progress = tqdm(
        total=config.num_pairs,
        initial=min(len(done) * config.shard_size, config.num_pairs),
        desc="synthetic pairs",
        unit="pair",
        disable=not show_progress,
    )
    for shard in range(config.num_shards):
        if shard in done:
            continue
        count = min(config.shard_size, config.num_pairs - shard * config.shard_size)
        generator = torch.Generator().manual_seed(derive_seed(config.seed, shard))
        ws = sample_codes(decoder, count, config, generator, w_mean)
        faces = []
        with torch.no_grad():
            for start in range(0, count, config.render_batch_size):
                batch = ws[start : start + config.render_batch_size].to(device)
                hr = decoder.synthesis(batch).clamp(0, 1)
                faces.append((hr * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
                progress.update(batch.shape[0])
        table = Dataset.from_dict({"ws": ws.half().numpy(), "hr": torch.cat(faces).numpy()}, features=features)
        final = out_dir / _shard_name(shard)
        partial = out_dir / f".partial-{_shard_name(shard)}"
        shutil.rmtree(partial, ignore_errors=True)
        _save_quietly(table, partial)
        partial.rename(final)
        done.append(shard)
        write_metadata(len(done))
    progress.close()
    return out_dir


def _save_quietly(table: Any, path: Path) -> None:
    """``save_to_disk`` without its own progress bar (ours counts the pairs)."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        table.save_to_disk(str(path))
    finally:
        if was_enabled:
            enable_progress_bar()


class SyntheticPairs(torch.utils.data.Dataset):
    """A finished synthetic-pair folder: item ``i`` is ``(ws [num_ws, w_dim] float32, hr [3, R, R])``.

    HR faces are floats in ``[0, 1]``. Build with :meth:`load` (reads the folder).
    """

    def __init__(self, table: Any, metadata: dict[str, Any]) -> None:
        self.table = table
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | Path) -> SyntheticPairs:
        from datasets import concatenate_datasets, load_from_disk

        path = Path(path)
        metadata = _read_metadata(path)
        if metadata is None:
            raise SyntheticPairsError(f"{path}: no {METADATA_NAME}; make the pairs with `dapfsr synthesize`")
        config = SyntheticPairsConfig(**metadata["settings"])
        missing = [_shard_name(i) for i in range(config.num_shards) if not (path / _shard_name(i)).is_dir()]
        if missing:
            raise SyntheticPairsError(
                f"{path} is incomplete ({len(missing)} of {config.num_shards} shards missing, first "
                f"{missing[0]}); rerun the same `dapfsr synthesize` command to finish it"
            )
        shards = [load_from_disk(str(path / _shard_name(i))) for i in range(config.num_shards)]
        table = concatenate_datasets(shards).with_format("numpy")
        return cls(table, metadata)

    def check_decoder(self, decoder: Decoder) -> None:
        """Refuse pairs rendered by a decoder other than the model's (their codes would lie)."""
        identity = decoder_identity(decoder)
        if self.metadata.get("decoder") != identity:
            raise SyntheticPairsError(
                f"synthetic pairs were rendered by {self.metadata.get('decoder')}, the model's decoder is {identity}"
            )

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.table[int(index)]
        ws = torch.from_numpy(np.asarray(row["ws"], dtype=np.float32))
        hr = torch.from_numpy(np.ascontiguousarray(row["hr"])).permute(2, 0, 1).float() / 255.0
        return ws, hr
