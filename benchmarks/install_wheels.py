"""Install the wheels of a folder whose distribution is missing from this interpreter or older than the wheel,
without dependencies, into a target folder (for GPU machines without package index access).

    python3 benchmarks/install_wheels.py WHEEL_DIR TARGET_DIR      # then put TARGET_DIR first on PYTHONPATH
"""

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path


def _version_tuple(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in v.replace("-", ".").split(".")[:4])


def main(wheel_dir: str, target: str) -> None:
    chosen = []
    for wheel in sorted(Path(wheel_dir).glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if installed is None or _version_tuple(installed) < _version_tuple(version):
            chosen.append(str(wheel))
    if chosen:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--upgrade", "--target", target, *chosen])
    print("installed from wheels:", ", ".join(Path(c).name.split("-")[0] for c in chosen) or "none")


if __name__ == "__main__":
    main(*sys.argv[1:3])
