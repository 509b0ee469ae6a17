"""Method contracts are read without torch; each resolves to its kernel on first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alloykit.methods import BasePolicy, Method, all_methods, contract, get_method, method_names
from alloykit.methods.registry import register, register_streaming

PACKAGE = Path(__file__).resolve().parents[2] / "alloykit"
BYPASS_PACKAGE_INIT = f"""
import sys, types
package = types.ModuleType("alloykit")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["alloykit"] = package
"""
"""The package's own ``__init__`` imports the engine (torch): load ``alloykit.methods`` alone."""


def run_python(code: str) -> str:
    """Run ``code`` after :data:`BYPASS_PACKAGE_INIT` in a fresh interpreter; its stdout."""
    script = BYPASS_PACKAGE_INIT + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_contracts_are_read_without_importing_torch() -> None:
    output = run_python(
        """
        import alloykit.methods as m
        for meth in m.all_methods():
            meth.name, meth.summary, meth.reference, meth.params, meth.base, meth.min_models
            meth.max_models, meth.random, meth.notes, meth.streams, meth.param("weight")
        m.get_method("ties"); m.method_names()
        assert "torch" not in sys.modules, "torch imported"
        print("ok")
        """
    )
    assert output.strip() == "ok"


def test_worker_threads_resolving_at_once_all_get_the_kernels() -> None:
    output = run_python(
        """
        from concurrent.futures import ThreadPoolExecutor
        import alloykit.methods as m
        names = m.method_names() * 4
        with ThreadPoolExecutor(8) as pool:
            kernels = list(pool.map(lambda name: m.get_method(name).kernel, names))
        print(all(callable(k) for k in kernels))
        """
    )
    assert output.strip() == "True"


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_every_declared_method_resolves_to_a_kernel(method: Method) -> None:
    assert callable(method.kernel)
    assert (method.streaming is not None) == method.streams


def test_every_registered_kernel_has_a_contract() -> None:
    for method in all_methods():
        contract.implementation(method)
    assert sorted(contract._IMPLEMENTATIONS) == method_names()


def test_a_contract_whose_module_registers_no_kernel_says_so() -> None:
    orphan = Method(
        name="orphan",
        summary="declared, never implemented",
        reference="tests",
        params=(),
        base=BasePolicy.UNUSED,
        kernel_module="alloykit.methods.step_choices",
    )
    with pytest.raises(ImportError, match=r"'orphan'.*registers no kernel"):
        _ = orphan.kernel


def test_a_kernel_for_an_undeclared_method_is_refused() -> None:
    with pytest.raises(ValueError, match="does not declare"):
        register("no_such_method")(lambda tensors, base: tensors[0])


def test_a_kernel_outside_the_declared_module_is_refused() -> None:
    def linear(tensors: object, base: object) -> object:
        return tensors

    with pytest.raises(ValueError, match=r"declared as implemented in alloykit\.methods\.linear"):
        register("linear")(linear)


def test_a_streaming_form_for_a_whole_tensor_method_is_refused() -> None:
    assert not get_method("karcher").streams
    with pytest.raises(ValueError, match="does not stream"):
        register_streaming("karcher", lambda shape, dtype: None)
