"""One definition of each result field: name, dtype and meaning.

``BatchResult``, its docstring, the record the driver fills step by step
(:class:`StepRecord`) and the CLI's ``--json`` (:func:`to_json`) all follow from
``STEP_FIELDS``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Field:
    """One per-step array of a :class:`BatchResult`: shape (b,)."""

    name: str
    dtype: object
    doc: str

    @property
    def type_name(self):
        return {np.int64: "int64", np.float64: "float64", bool: "bool"}.get(self.dtype, "str")


STEP_FIELDS = (
    Field("indices", np.int64, "Pool indices in the order they were picked."),
    Field("scores", np.float64,
          "The batch's mutual information ``a(A) = I(y_A; ω)`` after each pick, in nats. "
          "Sampled steps report the estimate as it is, never clipped: a score above "
          "``log K`` is estimator noise."),
    Field("num_configurations", np.int64,
          "Rows M of the batch's joint at each step (1 at step 0), after merging and "
          "pruning."),
    Field("exact", bool, "Whether each step enumerated every configuration."),
    Field("mode", "<U7",
          '"exact", "pruned" (exact less negligible configurations, within '
          '``error_bounds``) or "sampled".'),
    Field("error_bounds", np.float64,
          "Certified bound on how far the step's utilities lie below the exact ones: 0 on "
          "exact steps, the pruning bound on pruned steps, nan on sampled steps."),
    Field("std_errors", np.float64,
          "Standard error of the picked point's utility on sampled steps (nan otherwise)."),
    Field("ambiguous", bool,
          "Sampled steps whose top-two utilities lie within two standard errors of their "
          "difference, after any extra draws for the contenders (then: a contender may "
          "still be more than 1e-3 nats better than the pick; docs/sampled_steps.md)."),
    Field("num_evaluations", np.int64,
          "Candidates whose utility the step computed, on some or all of its rows (fewer "
          "than the pool when bounds or tests showed the others cannot be picked)."),
    Field("bound_rows", np.int64,
          "Rows G of the finest coarse joint that could bound candidates' utilities (0 when "
          "none did); coarser ones, from 16 rows up, bounded them first."),
    Field("num_bounded", np.int64, "Candidates bounded by the coarsest."),
    Field("saturated", bool,
          "Steps whose batch score is within noise of ``log K`` or whose gain is within "
          "noise of 0 (on sampled steps two standard errors of the score, and of the gain "
          "estimated on the step's own draws; the certified error plus the tie tolerance "
          "otherwise): the K posterior samples cannot tell more picks apart."),
    Field("segments", np.int64,
          'Which greedy run each pick belongs to: 0, then one more after each restart '
          '(``saturation="restart"``). ``scores`` are the mutual information of the '
          "pick's segment."),
    Field("rows_scored", np.int64,
          "Candidate × configuration rows the step scored, bounds included."),
    Field("decision_rows", np.int64,
          "Configuration rows behind the pick's utility: M, plus the rows of extra draws "
          "on sampled steps that needed them."),
    Field("resolutions", np.float64,
          "How far, in nats, the pick's utility may lie below the best utility of the "
          "step's own estimate: candidates whose bound was within this of the best were "
          "left unscored. 0 where every candidate that could be best was scored (exact and "
          "pruned steps, ``lazy=False``, a run's first sampled step, steps whose extra "
          "rounds scored the contenders left); on other sampled steps, the standard error "
          "of the difference between the last sampled step's top two utilities, which "
          "that estimate cannot resolve (docs/sampled_steps.md)."),
)
STEP_FIELD_NAMES = tuple(field.name for field in STEP_FIELDS)
_UTILITIES_DOC = ("``utilities[t, x] = a(A_t ∪ {x})`` for every candidate x at step t; nan "
                  "at points already picked and at non-candidates. None unless "
                  "``return_utilities=True``.")


def _docstring():
    import textwrap

    def entry(name, kind, doc):
        return f"{name} : {kind}\n" + textwrap.indent(textwrap.fill(doc, 84), "    ")

    entries = [entry(f.name, f"ndarray of shape (b,), {f.type_name}", f.doc)
               for f in STEP_FIELDS]
    entries.insert(2, entry("utilities", "ndarray of shape (b, N), float64 or None",
                            _UTILITIES_DOC))
    return ("The batch that was picked, in pick order, and how each step was computed.\n\n"
            "Attributes\n----------\n" + "\n".join(entries) + "\n")


BatchResult = dataclasses.make_dataclass(
    "BatchResult",
    [(name, np.ndarray) for name in STEP_FIELD_NAMES] + [("utilities", object)],
    frozen=True, namespace={"__doc__": _docstring(), "__module__": __name__})


class StepRecord:
    """The per-step arrays of a result, filled one step at a time by the driver.

    Parameters
    ----------
    steps : int
    """

    def __init__(self, steps):
        self._arrays = {f.name: np.empty(steps, dtype=f.dtype) for f in STEP_FIELDS}

    def __getitem__(self, name):
        return self._arrays[name]

    def record(self, t, **values):
        """Step t's value of every field (all of them, by name)."""
        if values.keys() != self._arrays.keys():
            raise TypeError(f"step fields missing: {set(self._arrays) - set(values)}, "
                            f"unknown: {set(values) - set(self._arrays)}")
        for name, value in values.items():
            self._arrays[name][t] = value

    def result(self, utilities=None):
        """The ``BatchResult``, with every step's utilities when they were kept."""
        return BatchResult(utilities=utilities, **self._arrays)


def to_json(result):
    """Every per-step field as JSON values: lists, with None for a non-finite float."""
    def values(field):
        array = getattr(result, field.name)
        if field.dtype is np.float64:
            return [float(v) if np.isfinite(v) else None for v in array]
        return array.tolist()
    return {field.name: values(field) for field in STEP_FIELDS}
