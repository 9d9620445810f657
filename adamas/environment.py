"""The record of where a result was produced: device, versions and date, stored with every results file."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

import adamas


def package_version(name: str) -> str | None:
    """The installed version of the distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


COMMIT_VARIABLE = "ADAMAS_COMMIT"
"""Names the commit a run is of where the tree has no git history (a copy sent to a GPU machine)."""


def commit() -> str | None:
    """The commit of the tree this code runs from: $ADAMAS_COMMIT, else the checkout's HEAD, else None."""
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(device: torch.device | str | None = None) -> dict[str, object]:
    """Device, versions and date of this run; `device` defaults to the first GPU, else the CPU.

    A GPU is named with its multiprocessor count (kernel grids are sized by it); the CPU with
    its architecture and torch's thread count, which bound the CPU path's speed.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {
        "device": props.name if cuda else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "multiprocessors": props.multi_processor_count if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "transformers": package_version("transformers"),
        "adamas": adamas.__version__,
        "python": platform.python_version(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
