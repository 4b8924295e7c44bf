"""Theory on top of the simulations: fixed points of the order-parameter flow, the conserved
quantities and the failures they predict, and the stages (plateaus, drops) of learning curves.

- :func:`find_fixed_points`, :class:`FixedPoint`, :func:`fixed_point_table`,
  :func:`canonical_form`, :func:`weights_from_order_parameters`,
  :func:`parameter_space_hessian`, :func:`plateau_levels_with_noise` (levels of the full ODE
  with the SGD-noise term, :class:`NoisyPlateauLevels`)
- :func:`conserved_drift`, :func:`predict_failure`, :func:`phase_diagram_failure`
- :func:`detect_stages`, :func:`detect_stages_batch`, :func:`plateau_levels`

Activations other than the quadratic one (docs/analysis.md, 'Other activations'): the
fixed-point functions take ``activation=`` and ``teacher_activation=``, the failure predictors
``activation=``, :func:`conserved_drift` reads it from the result; the symmetries and the
conserved quantity ``Q_jj - a v_j^2`` follow them. The stage detector reads any curve.
"""

from .conserved import (
    ConservedDrift,
    FailurePrediction,
    PhaseDiagram,
    conserved_drift,
    phase_diagram_failure,
    predict_failure,
)
from .fixed_points import (
    FixedPoint,
    NoisyPlateauLevels,
    ParameterHessian,
    Symmetry,
    canonical_form,
    find_fixed_points,
    fixed_point_table,
    parameter_space_hessian,
    plateau_levels_with_noise,
    weights_from_order_parameters,
)
from .stages import Stages, StagesBatch, detect_stages, detect_stages_batch, plateau_levels

__all__ = [
    "find_fixed_points",
    "FixedPoint",
    "fixed_point_table",
    "canonical_form",
    "Symmetry",
    "weights_from_order_parameters",
    "parameter_space_hessian",
    "ParameterHessian",
    "plateau_levels_with_noise",
    "NoisyPlateauLevels",
    "conserved_drift",
    "ConservedDrift",
    "predict_failure",
    "FailurePrediction",
    "phase_diagram_failure",
    "PhaseDiagram",
    "detect_stages",
    "detect_stages_batch",
    "Stages",
    "StagesBatch",
    "plateau_levels",
]
