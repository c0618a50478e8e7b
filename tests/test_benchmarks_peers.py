"""benchmarks/throughput.py --peers and the PyTorch peers, without PyTorch installed.

The peers themselves need PyTorch (a separate environment, benchmarks/peers/README.md)
and are checked by running them; here only what holds without it: the flags exist
(`--help` answers before TensorFlow is imported) and a Python without PyTorch is told
in one line how to get it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PEERS = BENCHMARKS / "peers"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_throughput_help_lists_the_peer_flags():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "throughput.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "--peers " in done.stdout and "--peers_python" in done.stdout
    assert "tensorflow" not in done.stderr.lower()  # answered before TensorFlow loads


@pytest.mark.skipif(HAS_TORCH, reason="PyTorch is installed in this environment")
def test_peer_without_torch_fails_in_one_line():
    done = subprocess.run(
        [sys.executable, str(PEERS / "run.py"), "--step", "protonet"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "needs PyTorch" in lines[0] and "--peers_python" in lines[0]


@pytest.mark.skipif(HAS_TORCH, reason="PyTorch is installed in this environment")
def test_peer_modules_raise_a_clear_import_error(monkeypatch):
    monkeypatch.syspath_prepend(str(PEERS))
    for name in ("common", "protonet", "maml"):
        sys.modules.pop(name, None)
        with pytest.raises(ImportError, match=r"needs PyTorch.*pip install"):
            importlib.import_module(name)
        sys.modules.pop(name, None)
