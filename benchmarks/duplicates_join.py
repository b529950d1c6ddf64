"""The duplicates' approximate method before and after it moved to revsearch.retrieval.ann.knn_join.

Old: revsearch/duplicates/candidates.py at commit 5cc6600 (its own NumPy spherical k-means), read with
``git show``; new: ``duplicate_edges(method="approximate")``. Same synthetic vectors as
``benchmarks/duplicates.py scale``, runs interleaved (old, new) ``reps`` times; recall of the planted
pairs (same group) and of the exact edges of the planted rows (brute force over all rows).

    python benchmarks/duplicates_join.py N DIM REPS [TMPDIR]    # e.g. 100000 2048 3
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
TMP = Path(sys.argv[4] if len(sys.argv) > 4 else tempfile.gettempdir())
OLD = TMP / "old_candidates.py"
OLD.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", "5cc6600:revsearch/duplicates/candidates.py"],
                               check=True, capture_output=True).stdout)
spec = importlib.util.spec_from_file_location("old_candidates", OLD)
old = importlib.util.module_from_spec(spec); sys.modules["old_candidates"] = old; spec.loader.exec_module(old)
from revsearch.duplicates import duplicate_edges, connected_components
from duplicates import make_synthetic  # benchmarks/duplicates.py

n = int(sys.argv[1]); dim = int(sys.argv[2]); reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
t, k, noise = 0.95, 16, 0.2
path = TMP / f"syn-{n}-{dim}.npy"
planted = make_synthetic(path, n, dim, max(10, n // 100), 0, noise)
x = np.load(path, mmap_mode="r")
# exact edges of the planted rows: each planted row's k best (>= t) over all rows, both directions as duplicate_edges does
prow = np.unique(planted.ravel())
xs = np.asarray(x[prow])
exact = set()
S = np.concatenate([xs @ np.asarray(x[s0:s0 + 8192]).T for s0 in range(0, n, 8192)], axis=1)
S[np.arange(len(prow)), prow] = -np.inf
for i, r in enumerate(prow):
    top = np.argsort(-S[i], kind="stable")[:k]
    for j in top:
        if S[i, j] >= t:
            exact.add(frozenset((int(r), int(j))))
del S
print(f"n={n} dim={dim}: {len(planted)} planted groups of 4; exact edges at planted rows: {len(exact)}", flush=True)

def run_old():
    top = old.TopK(k, n)
    class Bar:
        def update(self, _): pass
    info = old._approx_edges(old.Rows([x]), None, t, top, old.DEFAULT_NPROBE, None, 0, Bar())
    return top.result(), info

def run_new():
    info = {}
    r = duplicate_edges(x, t, k=k, method="approximate", info=info)
    return r, info

res = {"old": [], "new": []}
for rep in range(reps):
    for name, fn in (("old", run_old), ("new", run_new)):
        t0 = time.perf_counter(); (src, dst, sc), info = fn(); secs = time.perf_counter() - t0
        labels = connected_components(n, src, dst)
        found = sum(int(labels[g[a]] == labels[g[b]]) for g in planted for a in range(4) for b in range(a + 1, 4))
        und = {frozenset((int(a), int(b))) for a, b in zip(src.tolist(), dst.tolist())}
        rec = len(exact & und) / max(1, len(exact))
        ok = np.allclose(sc, np.einsum("ij,ij->i", np.asarray(x[src]), np.asarray(x[dst])), atol=1e-5)
        res[name].append(secs)
        print(f"rep {rep} {name}: {secs:.1f} s; planted pairs in one group {found}/{len(planted)*6}; "
              f"exact edges at planted rows found {rec:.4f}; edges {len(src)}; scores exact {ok}; "
              f"info { {k_: v for k_, v in info.items() if k_ not in ('search',)} } {info.get('search', '')} "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
print(f"CPU threads {os.cpu_count()}; load {os.getloadavg()}")
print("median old %.1f s, new %.1f s, ratio old/new %.2f" % (np.median(res["old"]), np.median(res["new"]), np.median(res["old"]) / np.median(res["new"])))
path.unlink()
