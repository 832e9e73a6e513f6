"""batchbald_fast: fast, exact-where-possible BatchBALD acquisition."""

from ._api import bald, batch_epig, batchbald, conditional_entropy, entropy, epig
from ._backend import backend_info
from ._noise import SaturationWarning
from ._result import BatchResult
from ._memory import MemoryBudgetError
from ._stochastic import stochastic_batch
from .sklearn import ensemble_probas

__all__ = ["BatchResult", "MemoryBudgetError", "SaturationWarning", "backend_info", "bald",
           "batch_epig", "batchbald",
           "conditional_entropy", "ensemble_probas", "entropy", "epig", "stochastic_batch"]
__version__ = "0.1.0"
