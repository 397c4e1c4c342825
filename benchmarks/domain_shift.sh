#!/usr/bin/env bash
# The `domain-shift` benchmark suite, recorded: benchmarks/domain_shift.csv and .md.
#
# Run from the repository root on an otherwise idle machine (the timing is part of the record):
#
#     bash benchmarks/domain_shift.sh [OUT_FOLDER]     # default OUT_FOLDER: /tmp/domain-shift
#
# It runs `thinkingearth bench --suite domain-shift` (three seeds, the suite's defaults: land
# cover across biomes, flood mapping across flood types, Sentinel-2 L2A -> Landsat 8/9; source
# only, DANN, DeepCORAL, self-training, TENT and the oracle), then copies OUT/results.csv to
# benchmarks/domain_shift.csv and writes benchmarks/domain_shift.md: the command, the machine,
# the minutes, and the report's "Domain shift" section (tables and the per-method verdicts
# against source-only training, computed from the rows). EXTRA="--adapt ..." adds flags;
# DEST=FOLDER writes the two files there instead (a dry run: EXTRA="--seeds 1 --max-steps 1").
set -euo pipefail
out=${1:-/tmp/domain-shift}
here=$(cd "$(dirname "$0")" && pwd)
dest=${DEST:-$here}
bin=${THINKINGEARTH:-.venv/bin/thinkingearth}
command="thinkingearth bench --suite domain-shift ${EXTRA:-} --out $out"
start=$(date +%s)
# shellcheck disable=SC2086  # EXTRA is a list of flags
"$bin" bench --suite domain-shift ${EXTRA:-} --out "$out"
end=$(date +%s)
mkdir -p "$dest"
cp "$out/results.csv" "$dest/domain_shift.csv"
OUT="$out" COMMAND="$command" SECONDS_TAKEN=$((end - start)) MD="$dest/domain_shift.md" \
    python3 - <<'EOF'
import os
import re
from datetime import UTC, datetime
from pathlib import Path

out = Path(os.environ["OUT"])
report = (out / "report.md").read_text(encoding="utf-8")
seconds = int(os.environ["SECONDS_TAKEN"])
facts = re.search(r"^written .*$", report, re.MULTILINE)
section = re.search(r"^## Domain shift\n(.*?)(?=^## )", report, re.MULTILINE | re.DOTALL)
runs = re.search(r"^Runs: .*$", report, re.MULTILINE)
lines = [
    "# Domain shift: `domain-shift`",
    "",
    "How much do source-only models lose on a new biome, a new flood type and a new sensor, and",
    "which adaptation methods win it back? Measured on the synthetic world (each shift a config",
    "value of `WorldConfig`), written by `benchmarks/domain_shift.sh` from the suite's",
    "`report.md`; every row of the run is in [`domain_shift.csv`](domain_shift.csv).",
    "",
    "Command (repository root):",
    "",
    "```",
    os.environ["COMMAND"],
    "```",
    "",
    "Machine, as `report.md` records it (`bench.runner.machine_summary`): "
    + (facts.group(0) if facts else "–"),
    "",
    f"**Time: {seconds // 60} min {seconds % 60} s for the whole command.** "
    + (runs.group(0) if runs else ""),
    "",
    f"Date: {datetime.now(UTC):%Y-%m-%d}.",
    "",
    "## Domain shift",
    section.group(1).rstrip() if section else "(no finished runs with a split)",
    "",
]
Path(os.environ["MD"]).write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"wrote {os.environ['MD']} ({seconds} s)")
EOF
