import sys
import time
import types

m = types.ModuleType("alloykit")
m.__path__ = ["alloykit"]
sys.modules["alloykit"] = m
sys.path.insert(0, "tests/methods")
import torch  # noqa: E402
from method_harness import run  # noqa: E402

from alloykit.methods import all_methods  # noqa: E402

shape = (4096, 4096)
g = torch.Generator().manual_seed(0)
base_cpu = torch.randn(shape, generator=g)
models_cpu = base_cpu + 0.01 * torch.randn((3, *shape), generator=g)
extra = {"density": 0.5, "epsilon": 0.1, "t": 0.3, "select_topk": 0.5}
for device in sys.argv[1:]:
    base, models = base_cpu.to(device), models_cpu.to(device)
    for method in all_methods():
        k = min(method.max_models or 3, 3)
        params = {p.name: extra[p.name] for p in method.params if p.name in extra}
        args = (models[:k], base)
        run(method.name, *args, seed=1, **params)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        reps = 3 if device == "cuda" else 1
        for _ in range(reps):
            run(method.name, *args, seed=1, **params)
        if device == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / reps * 1000
        print(f"{device:4s} {method.name:18s} {ms:9.1f} ms", flush=True)
