"""Running the pipeline over files: one record per photo, failures recorded instead of raised."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facetools_dapfsr.fileio import atomic_write_text
from facetools_dapfsr.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    complete_image_size,
    read_image,
    save_image,
    written_bit_depth,
)
from facetools_dapfsr.pipeline.inputs import Job
from facetools_dapfsr.pipeline.pipeline import FacePipeline, StageError
from facetools_dapfsr.pipeline.routing import FaceChoice

REPORT_FORMAT = "dapfsr-upscale-report"
REPORT_VERSION = 1


def process_job(
    pipeline: FacePipeline,
    job: Job,
    save_faces: Path | None = None,
    rank: int = 0,
    faces: FaceChoice = "all",
    skip_existing: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    keep_grey: bool = True,
) -> dict[str, Any]:
    """Upscale one photo file; never raises for a bad photo or a failing stage.

    ``faces`` chooses the faces processed (:func:`~facetools_dapfsr.pipeline.routing.select_faces`).
    With ``skip_existing``, a photo whose output exists and decodes completely is not redone
    (outputs are written atomically, so one that exists is one an earlier run finished).
    ``max_pixels`` is the photo's pixel budget (:func:`~facetools_dapfsr.images.read_image`).
    With ``keep_grey``, a grey photo (:attr:`~facetools_dapfsr.images.LoadedImage.is_grey`) is
    written grey, and so are its saved faces. A 16-bit grey photo runs and is written at 16 bits,
    faces included, when its output format holds them
    (:func:`~facetools_dapfsr.images.written_bit_depth`); otherwise at 8 bits, with a warning.

    Returns:
        A JSON-ready record: ``status`` is ``ok``, ``skipped`` or ``failed``; failures carry
        ``error`` and ``step`` (``input``, ``read``, ``<kind>:<stage>`` or ``write``); a record may
        carry ``warnings`` (frames of an animated file left out, 16 bits written at 8).
    """
    record: dict[str, Any] = {
        "index": job.index,
        "input": str(job.input),
        "output": str(job.output) if job.output else None,
        "process": rank,
        "status": "failed",
    }
    started = time.perf_counter()
    step = "input"
    try:
        if job.error is not None:
            record.update(step="input", error=job.error)
            return record
        assert job.output is not None  # a job without an output carries an error (plan_jobs, cli.upscale)
        if skip_existing and job.output is not None:
            size = complete_image_size(job.output)
            if size is not None:
                record.update(status="skipped", reason="output exists (--skip-existing)", output_size=list(size))
                return record
        step = "read"
        loaded = read_image(job.input, max_pixels=max_pixels)
        notes = list(loaded.warnings)
        record.update(
            mode=loaded.mode,
            exif_transposed=loaded.exif_transposed,
            input_size=[int(loaded.image.shape[2]), int(loaded.image.shape[1])],
        )
        grey = keep_grey and loaded.is_grey
        # Decided before the pipeline runs, so that a photo written at 8 bits (JPEG, RGB) runs
        # the 8-bit pipeline, exactly as it did before 16-bit outputs existed.
        bit_depth, note = written_bit_depth(job.output, loaded.bit_depth, grey)
        if bit_depth == 16 and 16 not in pipeline.bit_depths:
            bit_depth, note = 8, "16-bit grey written at 8 bits: a post stage edits 8-bit composites only"
        if note is not None:
            notes.append(note)
        if notes:
            record["warnings"] = notes
        step = "upscale"
        result = pipeline(loaded.image, source=str(job.input), faces=faces, bit_depth=bit_depth)
        assert result.composite is not None  # the background stage sets it in every pipeline run
        step = "write"
        record.update(grey=grey, bit_depth=result.bit_depth)
        save_image(result.composite, job.output, grey=grey)
        face_records = [face.to_record() for face in result.faces]
        if save_faces is not None:
            # The crops are PNG, which holds 16 bits: they are written at the photo's depth.
            for i, (face, face_record) in enumerate(zip(result.faces, face_records, strict=True)):
                stem = f"{job.output.stem}_face{i:02d}"
                assert face.lr_face is not None  # the aligner gives every face its crop
                lr_file = save_image(face.lr_face, save_faces / f"{stem}_lr.png", grey=grey, bit_depth=result.bit_depth)
                face_record["lr_file"] = str(lr_file)
                if face.sr_face is not None:
                    sr_file = save_image(
                        face.sr_face, save_faces / f"{stem}_sr.png", grey=grey, bit_depth=result.bit_depth
                    )
                    face_record["sr_file"] = str(sr_file)
        record.update(
            status="ok",
            output_size=[int(result.composite.shape[2]), int(result.composite.shape[1])],
            faces=face_records,
            timings={name: round(seconds, 4) for name, seconds in result.timings.items()},
        )
    except ImageReadError as error:
        record.update(step="read", error=str(error))
    except StageError as error:
        record.update(step=f"{error.kind}:{error.name}", error=str(error))
    except (OSError, ValueError, RuntimeError, MemoryError) as error:
        record.update(step=step, error=f"{type(error).__name__}: {error}")
    finally:
        record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def build_report(
    records: Sequence[dict[str, Any]], settings: dict[str, Any], num_processes: int, wall_seconds: float
) -> dict[str, Any]:
    """The run report: settings, a summary and the records ordered as the inputs were given."""
    images = sorted(records, key=lambda record: record["index"])
    ok = [record for record in images if record["status"] == "ok"]
    skipped = [record for record in images if record["status"] == "skipped"]
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "num_processes": num_processes,
        "summary": {
            "images": len(images),
            "succeeded": len(ok),
            "skipped": len(skipped),
            "failed": len(images) - len(ok) - len(skipped),
            "faces": sum(len(record.get("faces", [])) for record in ok),
            "wall_seconds": round(wall_seconds, 3),
        },
        "images": images,
    }


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
