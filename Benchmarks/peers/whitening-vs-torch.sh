#!/usr/bin/env bash
# NormKit's whitening (Whitening.fit ZCA, DecorrelatedBatchNorm .eigen forward in
# training) against PyTorch doing the same work with torch.linalg.eigh, Float,
# in alternation shape by shape for ROUNDS rounds (default 3), each side keeping
# its fastest median. Prints NormKit time / PyTorch time per case. Run from the
# project's root:
#   Benchmarks/peers/whitening-vs-torch.sh [SHAPES]    (default 4096x256)
# THREADS=n sets both sides' threads (default 1). Uses (or makes) the venv with
# torch in ${TMPDIR:-/tmp}/normkit-peers, as ../shared/peers/vs-torch.sh does.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=${TMPDIR:-/tmp}; venv=$tmp/normkit-peers; rounds=${ROUNDS:-3}; threads=${THREADS:-1}
shapes=${1:-4096x256}
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch" 2>/dev/null || { python3 -m venv "$venv" && "$venv/bin/pip" install -q numpy torch >/dev/null 2>&1; } || { echo "could not install torch"; exit 1; }
swift build -c release --product normbench >$tmp/normbench-build.log 2>&1 || { tail -20 $tmp/normbench-build.log; echo "normbench: build failed"; exit 1; }
nks=""; peers=""
for r in $(seq 1 "$rounds"); do
  for s in ${shapes//,/ }; do
    j=$tmp/wvt-nk-$r-$s.json; p=$tmp/wvt-peer-$r-$s.json
    .build/release/normbench --threads "$threads" --ops decorrelated,whitening-fit --methods eigen --dtypes float --backends blas --apis buffered --repetitions 3 --shapes "$s" --json "$j" >$tmp/wvt-normbench.txt 2>&1 || { tail -5 $tmp/wvt-normbench.txt; echo "normbench run failed"; exit 1; }
    PEER_THREADS=$threads PEER_JSON=$p "$venv/bin/python" "$here/whitening_torch.py" "$s" >/dev/null 2>&1 || { echo "PyTorch run failed"; exit 1; }
    nks="$nks $j"; peers="$peers $p"
  done
done
python3 - $nks -- $peers <<'PY'
import json, sys
args = sys.argv[1:]; split = args.index("--")
best = {}
for path in args[:split]:
    for r in json.load(open(path)):
        if r["pass"] in ("zca", "forward-training"):
            key = f'{r["op"]} {r["pass"]} {"x".join(map(str, r["shape"]))}'
            best.setdefault(key, [None, None])
            best[key][0] = min(r["median_s"], best[key][0] or 1e99)
for path in args[split + 1:]:
    for key, t in json.load(open(path)).items():
        best.setdefault(key, [None, None])
        best[key][1] = min(t, best[key][1] or 1e99)
print(f'{"case":44} {"NormKit ms":>11} {"PyTorch ms":>11} {"NormKit/PyTorch":>16}')
for key in sorted(best):
    nk, pt = best[key]
    if nk and pt:
        print(f"{key:44} {nk * 1e3:11.3f} {pt * 1e3:11.3f} {nk / pt:16.2f}")
PY
