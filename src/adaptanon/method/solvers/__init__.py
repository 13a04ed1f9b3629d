"""Solvers: the :class:`Solver` interface and the paper's :class:`GradientSolver`."""

from adaptanon.method.solvers.base import Solver, SolverResult
from adaptanon.method.solvers.gradient import GradientSolver, correct
from adaptanon.method.solvers.region import normalized_step
from adaptanon.method.solvers.slots import project

__all__ = ["GradientSolver", "Solver", "SolverResult", "correct", "normalized_step", "project"]
