"""Each package installs alone with plain pip from a clone, with only its core dependencies, and imports.

For each package, in a fresh venv of its own:

1. pip resolves ``pip install -c constraints.txt ./packages/NAME`` (``--dry-run --report``): the exact set
   plain pip installs. Every one of our names in it must come from this clone (a ``file://`` path under
   ``packages/``), never from an index, and none of the heavy libraries the package keeps in extras
   (torchvision, pycocotools, matplotlib, ...) may be in it.
2. That set is installed: the third-party wheels are linked from uv's cache (``--no-deps``, the files pip
   chose; torch's CUDA wheels take minutes to unpack with pip, a second with uv's hard links), our packages
   are built and installed by pip itself from their paths.
3. In the venv, with ``python -I`` (no current folder, no user site): every module of the package is
   imported. A module may fail only for want of a library that one of the package's extras declares (its
   error then names that extra); anything else fails the check.

    python .ci/install_alone.py                  # every package
    python .ci/install_alone.py ait-tokenizer    # some
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"

# package folder -> (import name, names that its core install must not pull in)
PACKAGES = {
    "ait-eval": ("ait_eval", {"torch", "pycocotools", "matplotlib", "ait-data"}),
    "ait-data": ("ait_data", {"torchvision", "pycocotools", "matplotlib", "tqdm", "h5py", "ait-eval"}),
    "ait-tokenizer": (
        "ait_tokenizer",
        {"torchvision", "pycocotools", "matplotlib", "pillow", "tqdm", "ait-data", "ait-eval"},
    ),
    "ait-backbone": ("ait_backbone", {"pycocotools", "matplotlib", "ait-data", "ait-eval"}),
    "ait-decoder": ("ait_decoder", {"torchvision", "pycocotools", "matplotlib", "ait-data", "ait-eval"}),
    "ait": ("ait", set()),
}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"install_alone: `{' '.join(cmd)}` failed:\n{result.stdout}\n{result.stderr}")
    return result


def check_package(folder: str, uv: str) -> float:
    import_name, forbidden = PACKAGES[folder]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"alone-{folder}-") as tmp:
        venv, report = Path(tmp) / "venv", Path(tmp) / "report.json"
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        python = str(venv / "bin" / "python")
        # 1. what plain pip installs for `pip install ./packages/NAME`
        _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--dry-run",
              "--report", str(report), "-c", str(CONSTRAINTS), str(ROOT / "packages" / folder)])  # fmt: skip
        items = json.loads(report.read_text())["install"]
        ours, theirs = [], []
        for item in items:
            name, url = _canon(item["metadata"]["name"]), item["download_info"]["url"]
            if name.startswith("ait"):
                if not url.startswith((ROOT / "packages").as_uri() + "/"):
                    raise SystemExit(
                        f"install_alone: {folder}: pip takes our {name} from {url}, not this clone"
                    )
                ours.append(unquote(url.removeprefix("file://")))
            else:
                theirs.append(f"{name} @ {url}")  # the very file pip chose
        pulled = forbidden & {_canon(i["metadata"]["name"]) for i in items}
        if pulled:
            raise SystemExit(
                f"install_alone: {folder}: its core install pulls {sorted(pulled)} (extras only)"
            )
        # 2. that set: third-party wheels linked from uv's cache, ours built and installed by pip
        if theirs:
            _run([uv, "pip", "install", "--quiet", "--python", python, "--no-deps", "--link-mode", "hardlink",
                  *theirs])  # fmt: skip
        _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", *ours])
        # 3. every module imports, or names the extra it needs
        out = _run([python, "-I", __file__, "--imports", import_name, _canon(folder)], cwd=tmp)
    seconds = time.perf_counter() - started
    print(
        f"{folder}: {len(theirs)} third-party + {len(ours)} of ours; {out.stdout.strip()} ({seconds:.0f} s)"
    )
    return seconds


def check_imports(import_name: str, dist: str) -> int:
    """Run inside the package's venv: import every module of ``import_name``."""
    import importlib
    import importlib.metadata as md
    import pkgutil

    extras: dict[str, str] = {}  # library that an extra declares -> that extra
    for requirement in md.requires(dist if dist != "ait" else "ait-solver") or []:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if marker and marker.group(1) not in ("test", "all"):
            extras.setdefault(_canon(re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0]), marker.group(1))
    package = importlib.import_module(import_name)  # the package itself imports with the core alone
    imported, needing = 1, []
    for module in pkgutil.walk_packages(package.__path__, prefix=import_name + "."):
        try:
            importlib.import_module(module.name)
            imported += 1
        except ModuleNotFoundError as error:
            missing = _canon((error.name or "").split(".")[0])
            if missing not in extras:
                print(
                    f"{module.name}: imports {error.name}, which no dependency or extra declares",
                    file=sys.stderr,
                )
                return 1
            needing.append(f"{module.name.rsplit('.', 1)[-1]}[{extras[missing]}]")
    distribution = md.distribution(dist if dist != "ait" else "ait-solver")
    scripts = [entry for entry in distribution.entry_points if entry.group == "console_scripts"]
    for script in scripts:  # each console script's target resolves (`ait`, `ait-tokenizer-train`, ...)
        script.load()
    print(
        f"{imported} modules import"
        + (f", {len(needing)} need an extra: {' '.join(needing)}" if needing else "")
        + (f"; scripts {', '.join(entry.name for entry in scripts)} load" if scripts else "")
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", metavar="PACKAGE", help=f"some of {', '.join(PACKAGES)}")
    parser.add_argument("--jobs", type=int, default=3, help="packages checked at once (default 3)")
    parser.add_argument("--imports", nargs=2, metavar=("IMPORT_NAME", "DIST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.imports:
        return check_imports(*args.imports)
    unknown = sorted(set(args.packages) - set(PACKAGES))
    if unknown:
        parser.error(f"unknown package(s) {unknown}; expected some of {list(PACKAGES)}")
    args.packages = args.packages or list(PACKAGES)
    uv = shutil.which("uv") or os.environ.get("UV", "")
    if not uv:
        raise SystemExit("install_alone: needs uv on PATH (pip install uv)")
    started = time.perf_counter()
    # the steps wait mostly on the disk and pip's resolver: a few packages at once shorten the wall time
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda folder: check_package(folder, uv), args.packages))
    seconds = time.perf_counter() - started
    print(f"install_alone: {len(args.packages)} package(s) install alone with plain pip ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
