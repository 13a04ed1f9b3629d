"""The method itself: filters (anonymize), criteria (when the decision is kept), solvers
(the correction, paper eq. 3) and the pipeline that runs one batch through all of them."""

from adaptanon.method.criteria import (
    AllOf,
    Criterion,
    ProbabilityDistance,
    SameClass,
    parse_criterion,
)
from adaptanon.method.filters import (
    FILTERS,
    Blur,
    Filter,
    Mask,
    Mosaic,
    Yang,
    anonymize,
    parse_filter,
)
from adaptanon.method.metrics import RegionStrength, StrengthLimits, region_strength
from adaptanon.method.pipeline import Outcome, OutcomeImages, Settings, process_batch
from adaptanon.method.solvers import GradientSolver, Solver, SolverResult, correct

__all__ = [
    "FILTERS",
    "AllOf",
    "Blur",
    "Criterion",
    "Filter",
    "GradientSolver",
    "Mask",
    "Mosaic",
    "Outcome",
    "OutcomeImages",
    "ProbabilityDistance",
    "RegionStrength",
    "SameClass",
    "Settings",
    "Solver",
    "SolverResult",
    "Yang",
    "StrengthLimits",
    "anonymize",
    "correct",
    "parse_criterion",
    "parse_filter",
    "process_batch",
    "region_strength",
]
