"""Training and validation faces for a run, and the sharded, resumable loader over them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from facetools_dapfsr.data.faces import AlignedFaces, FaceDataError
from facetools_dapfsr.data.landmarks import DetectorSettings
from facetools_dapfsr.seeding import derive_seed
from facetools_dapfsr.training.arguments import TrainingArguments
from facetools_dapfsr.training.sampling import StreamSampler, dataset_length

if TYPE_CHECKING:
    from accelerate import Accelerator

# The held-out split must not change with the run seed, so that runs compare on the same faces.
HOLDOUT_SEED = 20210101


def prepare_faces(
    args: TrainingArguments, size: int, accelerator: Accelerator
) -> tuple[AlignedFaces | None, AlignedFaces | None]:
    """Training faces (None without ``--data``: a synthetic-pairs-only run) and validation faces
    (None when validation is off), aligned at ``size``.

    The main process detects landmarks first (and caches them); the others then read the cache.
    """
    settings = DetectorSettings(min_face_size=args.min_face_size)
    with accelerator.main_process_first():
        faces = None
        if args.data:
            faces = AlignedFaces.prepare(
                args.data,
                size,
                split=args.data_split,
                image_column=args.image_column,
                settings=settings,
                cache_path=args.landmark_cache,
                max_images=args.max_images,
                show_progress=accelerator.is_main_process,
            )
        validation = None
        if args.validation_size and args.validation_data:
            validation = AlignedFaces.prepare(
                args.validation_data,
                size,
                split=args.validation_split,
                image_column=args.image_column,
                settings=settings,
                max_images=args.validation_size,
                show_progress=accelerator.is_main_process,
            )
    if args.validation_size and validation is None and faces is not None:
        faces, validation = hold_out(faces, args.validation_size)
    return faces, validation


def hold_out(faces: AlignedFaces, count: int) -> tuple[AlignedFaces, AlignedFaces]:
    """Split off ``count`` faces (a fixed seeded choice) for validation."""
    if count >= len(faces):
        raise FaceDataError(
            f"cannot hold out {count} of {len(faces)} usable faces for validation; "
            "lower --validation-size or pass --validation-data"
        )
    order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(derive_seed(HOLDOUT_SEED, len(faces))))
    held = sorted(order[:count].tolist())
    kept = sorted(order[count:].tolist())
    return faces.subset(kept), faces.subset(held)


def stream_loader(
    dataset: torch.utils.data.Dataset,
    args: TrainingArguments,
    accelerator: Accelerator,
    start_batch: int,
    batch_size: int | None = None,
) -> torch.utils.data.DataLoader:
    """An endless loader of this process's micro-batches, starting at micro-batch ``start_batch``
    (of ``batch_size`` items, default ``args.batch_size``)."""
    batch_size = args.batch_size if batch_size is None else batch_size
    sampler = StreamSampler(
        dataset_length(dataset),
        batch_size,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=args.seed,
        start_batch=start_batch,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        drop_last=True,
    )
