"""``fingerprint(source)``: the model fingerprint a statistics file records
(``alloykit.model_fingerprint``) and the engine checks.

It is computed in :mod:`alloykit.checkpoint.fingerprint`, beside the readers it streams with,
so that the planner, below calibration in the layers, can check statistics files too.
"""

from alloykit.checkpoint.fingerprint import fingerprint

__all__ = ["fingerprint"]
