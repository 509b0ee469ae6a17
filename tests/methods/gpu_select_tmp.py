import time

import torch

for device in ["cuda", "cpu"]:
    x = torch.randn(4096 * 4096, device=device).abs()
    n = x.numel()
    k = n // 2

    def timed(label, f, reps=3):
        f()
        if device == "cuda":
            torch.cuda.synchronize()
        s = time.perf_counter()
        for _ in range(reps):
            f()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"{device} {label:24s} {(time.perf_counter() - s) / reps * 1000:8.2f} ms", flush=True)

    timed("kthvalue", lambda: x.kthvalue(n - k + 1))
    timed("topk k=n/2", lambda: x.topk(k, sorted=False))
    timed("topk k=n/100", lambda: x.topk(n // 100, sorted=False))
    timed("sort", lambda: x.sort())
    timed("rows kthvalue 4096", lambda: x.view(4096, 4096).kthvalue(2048, dim=-1))
    timed("argsort rows stable", lambda: x.view(4096, 4096).argsort(dim=-1, stable=True))
    timed("cpu rand 16M", lambda: torch.rand(n).to(device))
    thr = x.kthvalue(n - k + 1).values
    timed("compare+sum+item", lambda: int((x > thr).sum()))
    timed("nonzero", lambda: (x == thr).nonzero())
