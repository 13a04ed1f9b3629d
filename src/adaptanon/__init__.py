"""adaptanon: anonymize image regions so that a classifier keeps its decision.

Data flows one way: read image (:mod:`adaptanon.io`) -> find regions
(:mod:`adaptanon.regions`) -> anonymize, correct against the classifier
(:mod:`adaptanon.method`, :mod:`adaptanon.classifiers`) -> encode and verify
(:mod:`adaptanon.io.codecs`) -> write with its manifest record (:mod:`adaptanon.engines`).
:class:`Anonymizer` is the library entry point; ``adaptanon`` the command line.
"""

from importlib.metadata import PackageNotFoundError, version

from adaptanon.api import Anonymizer
from adaptanon.classifiers import Classifier, TorchClassifier, efficientnet_lite, load_classifier
from adaptanon.io import Codec, read_image, to_image, to_pixels
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
    anonymize,
    correct,
    parse_criterion,
    parse_filter,
    process_batch,
)
from adaptanon.preprocessing import Preprocess, PreprocessSpec, parse_preprocess
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import Detection, ExplicitBoxes, Regions, RegionSource, SaliencyBox

try:
    __version__ = version("adaptanon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "AllOf",
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
