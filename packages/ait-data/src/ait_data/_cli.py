"""One-line errors for the package's commands: ``ait: error: <what, which file, what to do>``, exit 2.

AIT_DEBUG=1 shows the full traceback instead; an unexpected exception is one line too, exit 1.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEBUG_ENV = "AIT_DEBUG"


# a library a command may miss -> the extra of ait-data that brings it
_EXTRAS = {
    "pycocotools": "coco",
    "tqdm": "coco",
    "torchvision": "augment",
    "matplotlib": "plots",
    "h5py": "h5",
}


def run_command(body: Callable[[], T]) -> T:
    try:
        return body()
    except KeyboardInterrupt:
        print("ait: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except ModuleNotFoundError as error:
        library = (error.name or "").split(".")[0]
        extra = _EXTRAS.get(library)
        if os.environ.get(DEBUG_ENV) or extra is None:
            raise
        print(
            f"ait: error: {library} is not installed: pip install './packages/ait-data[{extra}]' (from a "
            "clone of the repository)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        expected = isinstance(error, (ValueError, OSError, KeyError))
        text = " ".join(str(error).split()) or type(error).__name__
        if not expected:
            text = f"unexpected {type(error).__name__}: {text} (rerun with {DEBUG_ENV}=1 for the traceback)"
        print(f"ait: error: {text}", file=sys.stderr)
        raise SystemExit(2 if expected else 1) from None


# The console scripts: the command's module is imported inside run_command, so a missing extra (pycocotools
# for ait-maskcoco) is one line naming the extra, not an import traceback.
def maskcoco(argv: list[str] | None = None) -> int:
    return run_command(lambda: importlib.import_module("ait_data.maskcoco")).cli(argv)


def preview(argv: list[str] | None = None) -> int:
    return run_command(lambda: importlib.import_module("ait_data.preview")).cli(argv)
