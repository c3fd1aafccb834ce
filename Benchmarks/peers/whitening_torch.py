"""PyTorch (CPU) doing the whitening work normbench times, for whitening-vs-torch.sh.

For each shape NxD (argv), Float32, on PEER_THREADS threads:
  whitening-fit zca      mean, covariance / (N - 1), torch.linalg.eigh, W = U diag(1/sqrt(l + eps)) U^T
  dbn-eigen-g<m> forward-training
                         per group of m features: centre, covariance / N, batched eigh,
                         W, xhat = Xc W, y = gamma * xhat + beta (a decorrelated batch norm's forward)
Writes {"<op> <pass> <shape>": median seconds} to PEER_JSON.
"""
import json, os, sys, time
import torch

def median(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]

def zca_fit(x, eps=1e-5):
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    l, u = torch.linalg.eigh(cov)
    return mean, (u * (l + eps).rsqrt()) @ u.T

def dbn_forward(x, m, gamma, beta, eps=1e-5):
    n, d = x.shape
    xc = x - x.mean(0)
    g = xc.reshape(n, d // m, m).transpose(0, 1)            # (G, N, m)
    cov = g.transpose(1, 2) @ g / n                           # (G, m, m)
    l, u = torch.linalg.eigh(cov)
    w = (u * (l + eps).rsqrt().unsqueeze(1)) @ u.transpose(1, 2)
    xhat = (g @ w).transpose(0, 1).reshape(n, d)
    return gamma * xhat + beta

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
groups = [int(m) for m in os.environ.get("PEER_GROUP_SIZES", "16,64,256").split(",")]
results = {}
with torch.no_grad():
    for shape in sys.argv[1:]:
        n, d = map(int, shape.split("x"))
        x = torch.randn(n, d) * 5 + 12
        reps = max(3, min(50, int(2e9 // (n * d * d))))
        results[f"whitening-fit zca {shape}"] = median(lambda: zca_fit(x), reps)
        gamma, beta = torch.ones(d), torch.zeros(d)
        for m in groups:
            if d % m == 0:
                results[f"dbn-eigen-g{m} forward-training {shape}"] = median(lambda: dbn_forward(x, m, gamma, beta), reps)
json.dump(results, open(os.environ["PEER_JSON"], "w"))
