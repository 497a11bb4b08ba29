"""Benchmarks: the paper's cross-domain protocol, its baselines, and speed.

- ``protocol``: domains (folders of faces, Extended Yale B), splits, exemplar draws, seeded LR;
- ``baselines``: the compared methods behind one interface, selectable by name;
- ``runner``: runs the methods through the protocol and scores them;
- ``report``: ``results.json``, the markdown table, the PNG grid;
- ``bench``: feed-forward and adaptation speed, peak memory.
"""

from facetools_dapfsr.evaluation.baselines import (
    DEFAULT_METHODS,
    METHODS,
    Exemplar,
    Method,
    build_methods,
)
from facetools_dapfsr.evaluation.protocol import (
    Domain,
    ProtocolConfig,
    ProtocolError,
    draw_exemplars,
    make_splits,
)
from facetools_dapfsr.evaluation.report import write_report
from facetools_dapfsr.evaluation.runner import (
    EvaluationResult,
    EvaluationSettings,
    Scorer,
    evaluate,
)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Domain",
    "EvaluationResult",
    "EvaluationSettings",
    "Exemplar",
    "Method",
    "ProtocolConfig",
    "ProtocolError",
    "Scorer",
    "build_methods",
    "draw_exemplars",
    "evaluate",
    "make_splits",
    "write_report",
]
