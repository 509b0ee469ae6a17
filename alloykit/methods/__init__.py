"""Merge methods: their contracts and registry, importable without torch.

A method's kernel module (and torch with it) is imported the first time its
:attr:`~alloykit.methods.contract.Method.kernel` or ``streaming`` is read, so validating a
recipe or listing the methods costs no torch import.
"""

from alloykit.methods.contract import (
    REQUIRED,
    BasePolicy,
    Form,
    Method,
    Param,
    Scope,
    Statistic,
    StatisticShape,
)
from alloykit.methods.define import PerModel, Range, merge_method
from alloykit.methods.registry import all_methods, get_method, method_names

__all__ = [
    "REQUIRED",
    "BasePolicy",
    "Form",
    "Method",
    "Param",
    "PerModel",
    "Range",
    "Scope",
    "Statistic",
    "StatisticShape",
    "all_methods",
    "get_method",
    "merge_method",
    "method_names",
]
