"""Errors users see: one line saying what is wrong, where, and what to do.

Every failure caused by the user's input is an :class:`AlloyError` (exit code 2); anything
else reaching the CLI is an internal failure (exit code 1). The CLI prints ``str(error)``,
which joins the message and the hint, and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

import errno


class AlloyError(Exception):
    """Bad input: a recipe, checkpoint or option the user can fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class RecipeError(AlloyError):
    """The recipe is malformed or names unknown methods / parameters / values."""


class CheckpointError(AlloyError):
    """A checkpoint cannot be found, read, or trusted."""


class PlanError(AlloyError):
    """The inputs are readable but cannot be merged as asked (shapes, missing tensors, ...)."""


class OutputError(AlloyError):
    """The output location is unusable (exists, not writable, ...)."""


class DiskFullError(OutputError):
    """The output's filesystem has too little free space (found before writing, or mid-way)."""


class NonFiniteError(AlloyError):
    """An input tensor holds NaN or infinity."""

    @classmethod
    def in_input(cls, model: str, name: str, nan: bool) -> NonFiniteError:
        """The error for tensor ``name`` of ``model`` holding NaN (``nan``) or infinite values."""
        kind = "NaN" if nan else "infinite values"
        return cls(
            f"tensor {name!r} of model {model!r} contains {kind}",
            "the checkpoint is corrupt or was saved after a diverged training run",
        )


class OutputMismatchError(AlloyError):
    """The written config and tensors disagree (transformers would drop or miss weights): a
    defect of alloykit, not of the input, so the exit code is that of an internal failure."""

    exit_code = 1


class MethodDefinitionError(AlloyError):
    """A user-defined merge method is declared wrongly (``alloykit.merge_method``)."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write refused for want of space (or of quota): the user's to fix
    (exit 2), wherever it was met."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
