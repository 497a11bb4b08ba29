"""``dapfsr upscale``: upscale photos and replace their faces with super-resolved ones.

Run it as is, or under ``accelerate launch`` to spread a large archive over processes, GPUs and
machines (each photo is processed once; the main process writes one merged report).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from facetools_dapfsr.fileio import check_can_create, remove_stale_temporaries
from facetools_dapfsr.images import DEFAULT_MAX_PIXELS
from facetools_dapfsr.pipeline.config import (
    DEFAULT_MAX_OUTPUT_MEGAPIXELS,
    REPLACE_MODES,
    PathOptions,
    PipelineConfig,
    RealESRGANOptions,
)
from facetools_dapfsr.pipeline.inputs import Job
from facetools_dapfsr.pipeline.routing import FaceChoice

EPILOG = """\
examples:
  dapfsr upscale group.jpg -o group_x4.png --model ./my-model
  dapfsr upscale photos/ 'more/*.jpg' -o out/ --model org/dapfsr --scale 8 --report out/report.json
  accelerate launch --multi_gpu --num_processes 2 -m facetools_dapfsr.cli.main \
      upscale archive/ -o out/ --model ./my-model --report out/report.json

resuming: outputs are written atomically, so a killed run leaves only complete outputs (and
hidden .tmp files, removed by the next run). Rerun the same command with --skip-existing to
process only the photos without an output; the report then lists every photo, those skipped
with status "skipped".

exit status: 0 when every photo was written (or skipped), 1 when any photo failed (each is named
in the report and on stderr), 2 for errors that stop the run (no model, bad options).
"""
FACE_FILE = re.compile(r"^(?P<stem>.+)_face\d{2,}_(lr|sr)\.png$")
"""Names of the files --save-faces writes: ``<output stem>_face<NN>_lr.png`` (and ``_sr``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="upscale photos and super-resolve their faces",
        description=(
            "Upscale whole photos by --scale (the background is resampled) and replace the\n"
            "detected faces with their DAP-FSR super-resolved versions. A face larger than\n"
            "--max-face-size keeps the resampled photo, and by default a restored face is pasted\n"
            "only where it is sharper than the resampled photo, so no face ends up worse than\n"
            "plain resampling would leave it. Each face's path is in the --report."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files, folders or glob patterns")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (or a file name when there is a single input)",
    )
    parser.add_argument("--model", help="DAP-FSR model: local folder or Hub model id")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--adapter", help="domain adapter to load into the model (folder or Hub id)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default: %(default)s)")
    parser.add_argument(
        "--min-face-size",
        type=float,
        default=10.0,
        help="smallest face height to detect, in input pixels (default: %(default)s)",
    )
    parser.add_argument("--scale", type=float, default=4.0, help="upscaling factor of the photo (default: %(default)s)")
    paths = PathOptions()
    parser.add_argument(
        "--max-face-size",
        type=float,
        default=paths.max_face_size,
        help="largest face (side of its aligned crop, in input pixels) that is super-resolved; larger "
        "faces keep the resampled photo (default: %(default)s)",
    )
    parser.add_argument(
        "--replace",
        choices=REPLACE_MODES,
        default=paths.replace,
        help="sharper: paste a restored face only where it is sharper than the resampled photo; "
        "always: paste every restored face (default: %(default)s)",
    )
    parser.add_argument(
        "--fidelity",
        type=float,
        default=1.0,
        help="weight of the restored faces against the resampled photo, 0-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--faces",
        default="all",
        help="which faces: all, largest, center, or comma-separated indices in detection order (default: %(default)s)",
    )
    parser.add_argument(
        "--save-faces", type=Path, metavar="DIR", help="also save each face's LR crop and SR result here"
    )
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report of the run")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip photos whose output exists and is a complete image (resume a killed run)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_PIXELS / 1e6,
        help="refuse photos of more megapixels than this, before decoding them (default: %(default)g)",
    )
    parser.add_argument(
        "--max-output-megapixels",
        type=float,
        default=DEFAULT_MAX_OUTPUT_MEGAPIXELS,
        help="refuse photos whose output (input x scale squared) would have more megapixels than this, "
        "before any work (default: %(default)g)",
    )
    parser.add_argument(
        "--keep-grey",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write grey photos (a grey file, or a colour file whose channels are equal, as infrared "
        "frames often are) as grey, faces included, and 16-bit grey photos at 16 bits to PNG and TIFF (8 "
        "bits, with a warning, to other formats); --no-keep-grey writes them as 8-bit RGB (default: keep)",
    )
    parser.add_argument("--detector", default="mtcnn", help="detect stage by name (default: %(default)s)")
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="every input is one face already cropped to the model's template (square, any side): no "
        "detector runs (the same as --detector aligned)",
    )
    parser.add_argument("--aligner", default="template", help="align stage by name (default: %(default)s)")
    parser.add_argument("--super-resolver", default="dapfsr", help="super_resolve stage by name (default: %(default)s)")
    parser.add_argument("--post", default="paste", help="comma-separated post stages by name (default: %(default)s)")
    parser.add_argument(
        "--background",
        default="bicubic",
        help="background stage by name, how the photo under the faces is upscaled: bicubic, or realesrgan "
        "(Real-ESRGAN x4plus; much slower on a CPU) (default: %(default)s)",
    )
    parser.add_argument(
        "--background-tile",
        type=int,
        default=RealESRGANOptions().tile,
        metavar="PIXELS",
        help="realesrgan works in tiles of this many input pixels, to bound memory (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def parse_face_choice(text: str) -> FaceChoice:
    """``--faces``: ``all``, ``largest``, ``center`` or comma-separated indices."""
    if text in ("all", "largest", "center"):
        return text
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--faces must be all, largest, center or indices such as 0,2; got {text!r}") from None


def check_outputs(jobs: list[Job], report: Path | None, inputs: list[Path], save_faces: Path | None = None) -> None:
    """Refuse, before any photo runs, outputs that cannot be written and an output photo, a
    --report or a --save-faces that would overwrite an input: otherwise the run would fail (or
    destroy a photo) only at its end."""
    protected = {path.resolve() for path in inputs}
    for job in jobs:
        # plan_jobs marks these jobs failed (what the Python API gets); a command cannot succeed
        # with them, so it stops before loading the model rather than reporting each photo.
        if job.output is not None and job.output.resolve() in protected:
            raise ValueError(f"-o: the output {job.output} is one of the input photos; choose another output")
    for folder in sorted({job.output.parent for job in jobs if job.output is not None and job.error is None}):
        check_can_create(folder, "-o")
    if save_faces is not None:
        if save_faces.resolve() in protected:
            raise ValueError(f"--save-faces {save_faces} is one of the input photos; give a folder")
        check_can_create(save_faces, f"--save-faces {save_faces}")
        stems = {job.output.stem for job in jobs if job.output is not None}
        for path in sorted(inputs):
            match = FACE_FILE.match(path.name)
            if match and match["stem"] in stems and path.resolve().parent == save_faces.resolve():
                raise ValueError(f"--save-faces {save_faces}: a face crop would overwrite the input {path}")
    if report is None:
        return
    resolved = report.resolve()
    if resolved in protected:
        raise ValueError(f"--report {report} is one of the input photos; choose another file")
    # The run's own outputs are as much at risk: a report written over an upscaled photo or a
    # face crop would destroy it after the run, and one named like an output folder would fail.
    planned = [job.output.resolve() for job in jobs if job.output is not None]
    if resolved in planned:
        raise ValueError(f"--report {report} is one of the output photos; choose another file")
    if resolved in {path.parent for path in planned}:
        raise ValueError(f"--report {report} is the -o folder; give a file name such as {report / 'report.json'}")
    match = FACE_FILE.match(report.name)
    if (
        save_faces is not None
        and match
        and resolved.parent == save_faces.resolve()
        and match["stem"] in {path.stem for path in planned}
    ):
        raise ValueError(f"--report {report} is the name of a face crop --save-faces writes; choose another file")
    if report.is_dir():
        raise ValueError(f"--report {report} is a folder; give a file name such as {report / 'report.json'}")
    check_can_create(report.parent, f"--report {report}")


def remove_stale_outputs(jobs: list[Job], save_faces: Path | None, started: float) -> None:
    """Remove the hidden temporaries a killed run left for these jobs' outputs (and face crops)."""
    by_folder: dict[Path, set[str]] = {}
    for job in jobs:
        if job.output is not None:
            by_folder.setdefault(job.output.parent, set()).add(job.output.name)
    for folder, names in by_folder.items():
        remove_stale_temporaries(folder, names.__contains__, started)
    if save_faces is not None:
        stems = {job.output.stem for job in jobs if job.output is not None}

        def is_face_file(name: str) -> bool:
            match = FACE_FILE.match(name)
            return match is not None and match["stem"] in stems

        remove_stale_temporaries(save_faces, is_face_file, started)


def run(args: argparse.Namespace) -> int:
    import pluggy
    from tqdm import tqdm

    from facetools_dapfsr.allocator import retain_freed_memory
    from facetools_dapfsr.pipeline.batch import (
        build_report,
        process_job,
        write_json_atomic,
    )
    from facetools_dapfsr.pipeline.inputs import collect_inputs, plan_jobs
    from facetools_dapfsr.pipeline.manager import PluginError
    from facetools_dapfsr.pipeline.pipeline import FacePipeline
    from facetools_dapfsr.pipeline.sharding import open_shard

    retain_freed_memory()  # batches of faces reuse their large buffers (no change to results)
    started = time.perf_counter()
    started_at = time.time()  # temporaries older than this are a killed run's, not ours
    face_choice = parse_face_choice(args.faces)
    if not args.max_megapixels > 0:
        raise ValueError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    if args.aligned and args.detector not in ("mtcnn", "aligned"):
        raise ValueError(f"--aligned replaces the detector; it cannot be combined with --detector {args.detector}")
    config = PipelineConfig(
        detector="aligned" if args.aligned else args.detector,
        aligner=args.aligner,
        super_resolver=args.super_resolver,
        post_processors=tuple(name.strip() for name in args.post.split(",") if name.strip()),
        background=args.background,
        realesrgan=RealESRGANOptions(tile=args.background_tile),
        scale=args.scale,
        max_output_megapixels=args.max_output_megapixels,
        min_face_size=args.min_face_size,
        batch_size=args.batch_size,
        model=args.model,
        revision=args.revision,
        adapter=args.adapter,
        fidelity=args.fidelity,
        paths=PathOptions(max_face_size=args.max_face_size, replace=args.replace),
    )
    shard = open_shard(args.device)
    config.device = shard.device

    # Every process expands the same inputs in the same order, so they agree on the jobs.
    files, unmatched = collect_inputs(args.inputs)
    jobs = plan_jobs(files, args.output)
    for offset, spec in enumerate(unmatched):
        jobs.append(
            Job(
                index=len(files) + offset, input=Path(spec), output=None, error=f"{spec}: no such file or pattern match"
            )
        )
    if not jobs:
        raise FileNotFoundError("no input photos")
    check_outputs(jobs, args.report, files, args.save_faces)

    try:
        pipeline = FacePipeline.from_config(config)
    except pluggy.PluginValidationError as error:
        # An installed plugin implements a hook that does not exist (often a misspelling).
        raise PluginError(f"invalid facetools plugin: {error}") from error
    mine = shard.take(jobs)
    remove_stale_outputs(mine, args.save_faces, started_at)
    if args.report is not None and shard.is_main:
        remove_stale_temporaries(args.report.parent, args.report.name.__eq__, started_at)
    records = []
    progress = tqdm(
        mine, desc="upscale", unit="photo", disable=args.no_progress or not shard.is_local_main, file=sys.stderr
    )
    for job in progress:
        record = process_job(
            pipeline,
            job,
            save_faces=args.save_faces,
            rank=shard.rank,
            faces=face_choice,
            skip_existing=args.skip_existing,
            max_pixels=round(args.max_megapixels * 1e6),
            keep_grey=args.keep_grey,
        )
        for warning in record.get("warnings", []):
            progress.write(f"dapfsr: warning: {record['input']}: {warning}", file=sys.stderr)
        if record["status"] == "failed":
            # Errors usually name the file already; name it once either way.
            message = record["error"] if record["input"] in record["error"] else f"{record['input']}: {record['error']}"
            progress.write(f"dapfsr: failed: {message}", file=sys.stderr)
        records.append(record)
    progress.close()

    everything = shard.gather(records)
    failed = [record for record in everything if record["status"] == "failed"]
    skipped = [record for record in everything if record["status"] == "skipped"]
    if shard.is_main:
        if args.report is not None:
            report = build_report(everything, _settings(args, config), shard.world_size, time.perf_counter() - started)
            write_json_atomic(report, args.report)
        faces = sum(len(record.get("faces", [])) for record in everything)
        done = len(everything) - len(failed) - len(skipped)
        print(
            f"upscaled {done} of {len(everything)} photos ({faces} faces) x{config.scale:g} -> {args.output}"
            + (f"; {len(skipped)} skipped (output exists)" if skipped else "")
            + (f"; {len(failed)} failed" if failed else ""),
            file=sys.stderr,
        )
    shard.finish()
    return 1 if failed else 0


def _settings(args: argparse.Namespace, config: PipelineConfig) -> dict[str, Any]:
    return {
        "inputs": list(args.inputs),
        "output": str(args.output),
        "model": None if config.model is None else str(config.model),
        "revision": config.revision,
        "adapter": None if config.adapter is None else str(config.adapter),
        "device": config.device,
        "scale": config.scale,
        "min_face_size": config.min_face_size,
        "max_face_size": config.paths.max_face_size,
        "replace": config.paths.replace,
        "fidelity": config.fidelity,
        "faces": args.faces,
        "batch_size": config.batch_size,
        "stages": {
            "detect": config.detector,
            "align": config.aligner,
            "super_resolve": config.super_resolver,
            "background": config.background,
            "post": list(config.post_processors),
        },
        "save_faces": None if args.save_faces is None else str(args.save_faces),
        "skip_existing": args.skip_existing,
        "max_megapixels": args.max_megapixels,
        "max_output_megapixels": args.max_output_megapixels,
        "keep_grey": args.keep_grey,
    }
