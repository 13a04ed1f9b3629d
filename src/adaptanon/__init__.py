"""adaptanon: anonymize image regions so that a classifier keeps its decision.

Data flows one way: read image -> find regions (:mod:`~adaptanon.regions`) -> anonymize
(:mod:`~adaptanon.filters`) -> correct against the classifier (:mod:`~adaptanon.solver`,
:mod:`~adaptanon.criteria`, :mod:`~adaptanon.classifiers`) -> encode and verify
(:mod:`~adaptanon.encoding`) -> write with its manifest record (:mod:`~adaptanon.manifest`).
"""

from adaptanon.classifiers import Classifier, efficientnet_lite, load_classifier
from adaptanon.criteria import AllOf, Criterion, ProbabilityDistance, SameClass, parse_criterion
from adaptanon.encoding import Codec
from adaptanon.filters import Blur, Filter, Mask, Mosaic, anonymize
from adaptanon.pipeline import Outcome, Settings, process_batch
from adaptanon.preprocessing import Preprocess
from adaptanon.regions import ExplicitBoxes, RegionSource, SaliencyBox
from adaptanon.solver import SolverResult, correct

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "Blur",
    "Classifier",
    "Codec",
    "Criterion",
    "ExplicitBoxes",
    "Filter",
    "Mask",
    "Mosaic",
    "Outcome",
    "Preprocess",
    "ProbabilityDistance",
    "RegionSource",
    "SaliencyBox",
    "SameClass",
    "Settings",
    "SolverResult",
    "anonymize",
    "correct",
    "efficientnet_lite",
    "load_classifier",
    "parse_criterion",
    "process_batch",
]
