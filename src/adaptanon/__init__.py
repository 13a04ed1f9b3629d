"""adaptanon: anonymize image regions so that a classifier keeps its decision.

Data flows one way: read image (:mod:`adaptanon.io`) -> find regions
(:mod:`adaptanon.regions`) -> anonymize, correct against the classifier
(:mod:`adaptanon.method`, :mod:`adaptanon.classifiers`) -> encode and verify
(:mod:`adaptanon.io.codecs`) -> write with its manifest record (:mod:`adaptanon.engines`).
:func:`anonymize` (one image) and :class:`Anonymizer` (many) are the library entry points;
``adaptanon`` the command line. :func:`apply_filter` is the plain filter alone, inside
boxes, without the correction.
"""

from importlib.metadata import PackageNotFoundError, version

from adaptanon.api import Anonymized, Anonymizer, anonymize
from adaptanon.classifiers import Classifier, TorchClassifier, efficientnet_lite, load_classifier
from adaptanon.io import Codec, as_image, read_image, to_image, to_pixels
from adaptanon.method import (
    AllOf,
    Blur,
    Criterion,
    Filter,
    GradientSolver,
    Mask,
    Mosaic,
    Outcome,
    ProbabilityDistance,
    SameClass,
    Settings,
    Solver,
    SolverResult,
    Yang,
    correct,
    parse_criterion,
    parse_filter,
    process_batch,
)
from adaptanon.method import anonymize as apply_filter
from adaptanon.preprocessing import Preprocess, PreprocessSpec, parse_preprocess
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import Detection, ExplicitBoxes, Regions, RegionSource, SaliencyBox

try:
    __version__ = version("adaptanon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "AllOf",
    "Anonymized",
    "Anonymizer",
    "Blur",
    "Classifier",
    "Codec",
    "Criterion",
    "Detection",
    "ExplicitBoxes",
    "Filter",
    "GradientSolver",
    "ImageRecord",
    "Mask",
    "Mosaic",
    "Outcome",
    "Preprocess",
    "PreprocessSpec",
    "ProbabilityDistance",
    "RegionSource",
    "Regions",
    "SaliencyBox",
    "SameClass",
    "Settings",
    "Solver",
    "SolverResult",
    "Status",
    "TorchClassifier",
    "Yang",
    "anonymize",
    "apply_filter",
    "as_image",
    "correct",
    "efficientnet_lite",
    "load_classifier",
    "parse_criterion",
    "parse_filter",
    "parse_preprocess",
    "process_batch",
    "read_image",
    "to_image",
    "to_pixels",
]
