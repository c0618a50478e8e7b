"""Where the default main job's trials spend their time: training against everything else.

Runs the README's main job (`metasearch --output_dir=...`, every other flag at
its default) and prints JSON: each trial's wall seconds, its breakdown
(`seconds` in the trial record: setup, training, validation, latency,
saving, other), its training share, and whether every trial trains for at
least 90% of its wall time (issue "A search that pays for itself"), with the
load average before and after.

    python benchmarks/trial_overhead.py [--output_dir /tmp/trial_overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SHARE = 0.90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="/tmp/trial_overhead")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "metasearch.cli", f"--output_dir={args.output_dir}", "--overwrite"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    job_seconds = time.monotonic() - started
    with open(os.path.join(args.output_dir, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    trials = [
        {
            "trial_id": t["trial_id"],
            "architecture": t["architecture"],
            "wall_seconds": round(t["wall_seconds"], 2),
            "train_share": round(t["train_share"], 4),
            "seconds": {name: round(value, 2) for name, value in t["seconds"].items()},
        }
        for t in results["trials"]
        if t["status"] == "COMPLETED"
    ]
    if not trials:
        raise SystemExit(f"trial_overhead: no trial completed; see {args.output_dir}")
    print(
        json.dumps(
            {
                "benchmark": "trial_overhead",
                "job": "metasearch --output_dir=... (the README's main job)",
                "job_seconds": round(job_seconds, 1),
                "trials": trials,
                "lowest_train_share": min(t["train_share"] for t in trials),
                "target_train_share": TARGET_SHARE,
                "meets_target": all(t["train_share"] >= TARGET_SHARE for t in trials),
                "load_average": {"before": load_before, "after": os.getloadavg()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
