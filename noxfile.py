"""Sessions for the AiT monorepo.

    nox -s demo          the main job: tokenizers + joint task-solver on synthetic rooms
    nox -s tests         every package's tests and the integration tests, one environment
    nox -s eval data tokenizer backbone decoder app
                         one package alone, with only its declared dependencies
    nox -s lint          ruff check + ruff format --check
    nox -s bench         the benchmark suite (writes benchmarks/results/)
    nox -s bench_check   the regression check against benchmarks/baseline.json
    nox -s ablations     the paper's ablations at small scale
    nox -s paper_smoke   every paper config at paper size on the CPU: one step + one evaluation each (hours)
    nox -s faults        the fault suite alone (also part of `tests`; see docs/RELIABILITY.md)
    nox -s install_alone each package installed alone with plain pip into a fresh venv, then imported

Our own packages are always installed from their local paths, never resolved from an index
(PyPI holds an unrelated `ait`).  torch/torchvision are pinned by constraints.txt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")

# package dir -> (import name, local packages its tests need: ait-tokenizer's `train` extra brings ait-data
# and ait-eval; installed here from their paths, editable)
PACKAGES = {
    "ait-eval": ("ait_eval", []),
    "ait-data": ("ait_data", []),
    "ait-tokenizer": ("ait_tokenizer", ["ait-data", "ait-eval"]),
    "ait-backbone": ("ait_backbone", []),
    "ait-decoder": ("ait_decoder", []),
    "ait": ("ait", ["ait-data", "ait-eval", "ait-tokenizer", "ait-backbone", "ait-decoder"]),
}
SHORT = {
    "eval": "ait-eval",
    "data": "ait-data",
    "tokenizer": "ait-tokenizer",
    "backbone": "ait-backbone",
    "decoder": "ait-decoder",
    "app": "ait",
}


def _pip_indexes() -> dict[str, str]:
    """Hand pip's configured extra indexes / find-links to uv, which does not read pip.conf.

    On machines that mirror wheels locally (as ours do) this keeps uv off the network; elsewhere it
    is a no-op and uv uses PyPI.
    """
    env: dict[str, str] = {}
    for key, var in (
        ("global.extra-index-url", "UV_EXTRA_INDEX_URL"),
        ("global.find-links", "UV_FIND_LINKS"),
    ):
        if var in os.environ:
            continue
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", key],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        value = " ".join(out.stdout.split())
        if out.returncode == 0 and value:
            env[var] = value
    if os.environ.get("PIP_FIND_LINKS") and "UV_FIND_LINKS" not in os.environ:
        env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
    return env


UV_ENV = _pip_indexes()


def _closure(names: list[str]) -> list[str]:
    """The packages and, first, every local package they depend on."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in PACKAGES[name][1]:
            visit(dep)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def _install(session: nox.Session, names: list[str], extras: str = "test") -> None:
    args = []
    for name in _closure(names):
        args += ["-e", f"{ROOT / 'packages' / name}[{extras}]" if extras else str(ROOT / "packages" / name)]
    session.install("-c", CONSTRAINTS, *args, env=UV_ENV)


def _pytest(session: nox.Session, *paths: str) -> None:
    # the ten slowest tests in every log, so a suite that creeps past its time budget shows where
    session.run(
        "python", "-m", "pytest", "--durations=10", *paths, *session.posargs, env={"TRITON_INTERPRET": "1"}
    )


ALL_TEST_PATHS = [f"packages/{name}/tests" for name in PACKAGES] + ["integration_tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """All packages' tests and the integration tests in one environment, less the long end-to-end proofs
    (marked slow: `nox -s slow`)."""
    _install(session, list(PACKAGES))
    _pytest(session, "-m", "not slow", *ALL_TEST_PATHS)


@nox.session
def slow(session: nox.Session) -> None:
    """The long end-to-end proofs (tests marked slow): the overfit runs that show the whole chain learns."""
    _install(session, list(PACKAGES))
    _pytest(session, "-m", "slow", *ALL_TEST_PATHS)


def _make_package_session(short: str, name: str) -> None:
    def package_session(session: nox.Session) -> None:
        _install(session, [name])
        _pytest(session, f"packages/{name}/tests")

    package_session.__doc__ = f"{name} alone, with only its declared dependencies installed."
    package_session.__name__ = short
    nox.session(name=short)(package_session)


for _short, _name in SHORT.items():
    _make_package_session(_short, _name)


@nox.session
def faults(session: nox.Session) -> None:
    """The fault suite alone: kill -9 during saves, crafted pickles, NaN weights, full disk, SIGTERM."""
    _install(session, list(PACKAGES))
    _pytest(session, "integration_tests/test_faults.py")


@nox.session(venv_backend="none")
def install_alone(session: nox.Session) -> None:
    """Each package alone: plain pip resolves `pip install ./packages/NAME` into a fresh venv, which then
    imports every module (.ci/install_alone.py says how, and why uv links the third-party wheels)."""
    session.run("python", str(ROOT / ".ci" / "install_alone.py"), *session.posargs, env=UV_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.16.9", env=UV_ENV)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on the built-in default (synthetic rooms): see README."""
    _install(session, ["ait"], extras="")
    session.run("python", "-m", "ait", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    _install(session, ["ait"], extras="bench")
    session.run("python", "benchmarks/run.py", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session
def bench_check(session: nox.Session) -> None:
    _install(session, ["ait"], extras="bench")
    session.run("python", "benchmarks/check.py", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session
def ablations(session: nox.Session) -> None:
    _install(session, ["ait"], extras="bench")
    session.run("python", "benchmarks/ablations.py", *session.posargs)


@nox.session
def paper_smoke(session: nox.Session) -> None:
    """The nine paper configs at paper size on the CPU: a training step (fp32, bf16) and an evaluation
    pass each, with original-format weights through the converter. Hours on 2 cores, so not in CI; the last
    result is committed in benchmarks/paper_smoke/ (see benchmarks/README.md)."""
    _install(session, ["ait"], extras="bench")
    session.install("pytest", env=UV_ENV)  # the original's modules are restated in a test module
    session.run("python", "benchmarks/paper_smoke.py", *session.posargs)
