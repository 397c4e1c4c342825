#!/usr/bin/env bash
# The uncertainty heads, their evaluation and `predict --uncertainty split` on a CUDA GPU.
#
# CI has no GPU, so this is the check that the CUDA paths run (the sampled softmax, MC dropout
# and ensembles trained with --accelerator gpu, the test evaluation on the training device,
# prediction with --device cuda) and agree with the CPU. Run from the repository root on a
# machine with a GPU and this package importable (an editable install, or PYTHONPATH=src with
# the package's dist-info on the path so that its entry points are found):
#
#     bash benchmarks/gpu_uncertainty.sh OUT_FOLDER
#
# ACCELERATOR=cpu DEVICE=cpu STEPS=5 dry-runs it on a machine without a GPU.
# It writes OUT_FOLDER/gpu_uncertainty.log and OUT_FOLDER/gpu_uncertainty.json; the recorded
# result is benchmarks/gpu_uncertainty.md.
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_uncertainty.sh OUT_FOLDER}
mkdir -p "$out"
work=$(mktemp -d)
accelerator=${ACCELERATOR:-gpu}
device=${DEVICE:-cuda}
steps=${STEPS:-300}
te() { python3 -m thinkingearth.cli "$@"; }
exec > >(tee "$out/gpu_uncertainty.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

for method in none heteroscedastic mc_dropout ensemble; do
    start=$(date +%s.%N)
    te finetune --config synthetic-flood --out "$work/flood-$method" --accelerator "$accelerator" --max-steps "$steps" \
        --set head.uncertainty="$method" --set head.members=3 --set head.mc_samples=8 -q
    end=$(date +%s.%N)
    echo "finetune $method on $accelerator, $steps steps: $(python3 -c "print(round($end - $start, 1))") s"
done

te synth --out "$work/world" --format native --n 1 --size 256 -q
scene="$work/world/scene_00000"
for method in ensemble mc_dropout; do
    for on in $(printf '%s\n' cpu "$device" | sort -u); do
        te predict --task flood --weights "$work/flood-$method/model" \
            --pre2 "$scene/s1_sl2.tif" --pre "$scene/s1_sl1.tif" --post "$scene/s1_ms1.tif" \
            --uncertainty split --device "$on" --out "$work/map-$method-$on.tif" -q
    done
done

python3 - "$work" "$out/gpu_uncertainty.json" "$device" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np
import rasterio

work, target, accel = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
result: dict = {"finetune": {}, "predict": {}}
for method in ("none", "heteroscedastic", "mc_dropout", "ensemble"):
    metrics = json.loads((work / f"flood-{method}" / "metrics.json").read_text())
    keep = ("miou", "water_f1", "ece", "nll", "brier", "discard_auc", "discard_auc_random",
            "epistemic_mean")
    result["finetune"][method] = {k: metrics.get(k) for k in keep} | {
        "seconds": metrics["run"]["seconds"]}
for method in ("ensemble", "mc_dropout"):
    bands = {}
    for device in ("cpu", accel):
        with rasterio.open(work / f"map-{method}-{device}_uncertainty.tif") as f:
            bands[device] = (f.descriptions, f.read())
        with rasterio.open(work / f"map-{method}-{device}.tif") as f:
            bands[device + "_classes"] = f.read(1)
    (names, cpu), (_, gpu) = bands["cpu"], bands[accel]
    total, aleatoric, epistemic = gpu
    valid = np.isfinite(total)
    result["predict"][method] = {
        "bands": list(names),
        "max_abs_cpu_vs_cuda": float(np.nanmax(np.abs(cpu - gpu))),
        "class_agreement_cpu_vs_cuda": float(
            (bands["cpu_classes"] == bands[accel + "_classes"]).mean()),
        "max_abs_sum_error": float(np.abs(total - aleatoric - epistemic)[valid].max()),
        "epistemic_mean": float(epistemic[valid].mean()),
    }
target.write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
EOF
