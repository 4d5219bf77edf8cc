#!/usr/bin/env bash
# The GPU check: run it first wherever a GPU is lent (within ~8 minutes on one GPU).
#
#   scripts/gpu_check.sh [OUT_DIR]        (default: gpu_check_out)
#
# On a CUDA GPU, in this order, each part under its own time limit (a part that fails or runs out of time is
# recorded as such and the next one runs):
#   1. the tests marked `gpu` (tests/test_gpu.py)                                   -> OUT/pytest_gpu.txt
#   2. scripts/bench.py --quick trainer=gpu: make_cam against the reference loop on the same GPU, peak GPU
#      memory                                                                        -> OUT/bench.json
#   3. the main job with trainer=gpu (the whole pipeline on the synthetic data)     -> OUT/main_job.log, metrics
#   4. the main job's seeds again in float32 and in 16-mixed (make_cam + eval_cam on its classifier): the seed
#      mIoU of both                                                                  -> in OUT/gpu_check.json
# and writes OUT/gpu_check.json: the device (name, memory, torch, CUDA), each part's status and seconds, the
# figures. Without a GPU it says so, writes the JSON with "gpu": false, and exits 0 (the CPU parts are the
# CI's; nothing here is worth repeating on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-gpu_check_out}" && cd "${1:-gpu_check_out}" && pwd)"
STORE="$OUT/store"
STATUS="$OUT/parts.tsv"
: > "$STATUS"

device_json() {
  python - <<'PY'
import json
import torch
info = {"gpu": torch.cuda.is_available(), "torch": torch.__version__, "cuda": torch.version.cuda}
if info["gpu"]:
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1), count=torch.cuda.device_count())
else:
    info["device"] = "cpu (no CUDA device)"
print(json.dumps(info))
PY
}

part() {  # part NAME LIMIT_S COMMAND...: run, record status and seconds
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  local rc=$?
  local status=ok
  if [ $rc -eq 124 ]; then status=timeout; elif [ $rc -ne 0 ]; then status="failed (exit $rc)"; fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$STATUS"
  echo "== $name: $status in $((SECONDS - start)) s"
}

DEVICE="$(device_json)"
echo "device: $DEVICE"
if [ "$(python -c "import json,sys; print(json.loads(sys.argv[1])['gpu'])" "$DEVICE")" != "True" ]; then
  echo "gpu_check: no CUDA GPU on this machine; nothing to check here (the CPU tests are CI's). Exit 0."
  python - "$OUT/gpu_check.json" "$DEVICE" <<'PY'
import json, sys
json.dump({"device": json.loads(sys.argv[2]), "parts": {}, "note": "no GPU: nothing run"}, open(sys.argv[1], "w"), indent=1)
PY
  exit 0
fi

part pytest_gpu 120 bash -c "python -m pytest -q -m gpu -p no:cacheprovider tests > '$OUT/pytest_gpu.txt' 2>&1"
part bench 180 python scripts/bench.py --quick --out "$OUT/bench" --json "$OUT/bench.json" trainer=gpu
part main_job 180 bash -c "wsss trainer=gpu paths.root='$STORE' > '$OUT/main_job.log' 2>&1"
for prec in 32-true 16-mixed; do
  part "seeds_$prec" 60 bash -c "wsss trainer=gpu paths.root='$STORE' stages=[make_cam,eval_cam] cam.precision=$prec > '$OUT/seeds_$prec.log' 2>&1"
done

python - "$OUT" "$DEVICE" <<'PY'
import json, re, sys
from pathlib import Path
out, device = Path(sys.argv[1]), json.loads(sys.argv[2])
parts = {}
for line in (out / "parts.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    parts[name] = {"status": status, "seconds": int(seconds)}
result = {"device": device, "parts": parts}
if (out / "bench.json").exists():
    result["bench"] = json.loads((out / "bench.json").read_text())
def figures(log):
    text = (out / log).read_text() if (out / log).exists() else ""
    return {k: float(v) for k, v in re.findall(r"^\s+(\S+/miou)\s+([\d.]+)", text, re.M)}
result["main_job"] = figures("main_job.log")
result["seed_miou"] = {p: figures(f"seeds_{p}.log").get("eval_cam/train/miou") for p in ("32-true", "16-mixed")}
(out / "gpu_check.json").write_text(json.dumps(result, indent=1))
print(json.dumps(result))
PY
