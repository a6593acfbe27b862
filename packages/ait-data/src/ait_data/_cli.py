"""One-line errors for the package's commands: ``ait: error: <what, which file, what to do>``, exit 2.

AIT_DEBUG=1 shows the full traceback instead; an unexpected exception is one line too, exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEBUG_ENV = "AIT_DEBUG"


def run_command(body: Callable[[], T]) -> T:
    try:
        return body()
    except KeyboardInterrupt:
        print("ait: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        expected = isinstance(error, (ValueError, OSError, KeyError))
        text = " ".join(str(error).split()) or type(error).__name__
        if not expected:
            text = f"unexpected {type(error).__name__}: {text} (rerun with {DEBUG_ENV}=1 for the traceback)"
        print(f"ait: error: {text}", file=sys.stderr)
        raise SystemExit(2 if expected else 1) from None
