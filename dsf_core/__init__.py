"""dsf_core: factorize neural-network weight matrices into sparse / low-rank / tensor-train factors.

>>> import torch, dsf_core
>>> result = dsf_core.factorize(torch.randn(64, 64), "dsf", density=0.5)
>>> result.n_params <= 0.5 * 64 * 64
True
"""

from ._api import factorize
from ._metrics import damp_gram, relative_error, weighted_relative_error
from ._modules import FactorizedConv2d, FactorizedLinear
from ._registry import METHODS, MethodSpec, Option
from ._result import Factorization
from .exceptions import BudgetError, ConvergenceWarning, DataFreeWarning

__all__ = [
    "METHODS",
    "BudgetError",
    "ConvergenceWarning",
    "DataFreeWarning",
    "Factorization",
    "FactorizedConv2d",
    "FactorizedLinear",
    "MethodSpec",
    "Option",
    "damp_gram",
    "factorize",
    "relative_error",
    "weighted_relative_error",
]
