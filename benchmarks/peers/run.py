"""Times the PyTorch peers of benchmarks/throughput.py's steps; prints one JSON object.

Run with a Python that has PyTorch (see README.md), usually by
`benchmarks/throughput.py --peers`, or alone:

    /work/peers_venv/bin/python benchmarks/peers/run.py --step protonet --step maml \
        [--count 300] [--repeats 3] [--warmup 30] [--threads 2] [--episodes_npz FILE]

Steps: `protonet`, `maml` (second order), `fomaml` (first order), each timed
like metasearch (warm-up steps, then `repeats` runs of `count` steps from the
first episode; median, best and all rates in steps/s, CPU seconds per step,
the first warm-up step's loss); `matmul` (the best fp32 GFLOP/s of 2048x2048
matmuls); `check` (MAML's meta-gradient, second and first order, against
finite differences in float64).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

try:
    from common import Episodes, matmul_gflops, rates, run_steps, set_threads
except ImportError as error:  # one line, not a traceback: throughput.py shows it as it is
    sys.exit(f"benchmarks/peers/run.py: {error}")

STEPS = ("protonet", "maml", "fomaml", "matmul", "check")


def make_step(name: str, episodes: Episodes, total_steps: int):
    if name == "protonet":
        import protonet

        return protonet.make_step(episodes, total_steps)
    import maml

    return maml.make_step(episodes, total_steps, first_order=name == "fomaml")


def time_step(name: str, episodes: Episodes, args) -> dict:
    step = make_step(name, episodes, args.count * args.repeats + args.warmup)
    load_before = os.getloadavg()
    warm = run_steps(step, episodes, max(1, args.warmup))
    result = rates(step, episodes, args.count, args.repeats)
    return {
        "steps_per_second": result["median"],
        "best": result["best"],
        "all_runs": result["all_runs"],
        "cpu_seconds_per_step": result["cpu_seconds"],
        "first_loss": warm[0],
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", action="append", choices=STEPS, required=True)
    parser.add_argument("--count", type=int, default=60, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--interop_threads", type=int, default=0, help="0: PyTorch's default")
    parser.add_argument("--episodes_npz", help="episodes from throughput.py (default: random)")
    args = parser.parse_args(argv)

    import numpy
    import torch

    threads = set_threads(args.threads, args.interop_threads or None)
    report = {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "thread_environment": {
            k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_"))
        },
        "timed_steps_per_run": args.count,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "episodes": args.episodes_npz or "random",
    }
    episodes = Episodes(args.episodes_npz)
    for name in args.step:
        if name == "matmul":
            report["matmul_gflops"] = matmul_gflops()
        elif name == "check":
            import maml

            report["maml_gradient_check"] = maml.check_orders(episodes)
        else:
            report[name] = time_step(name, episodes, args)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
