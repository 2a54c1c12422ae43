import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


# ---------------------------------------------------------------------------- integration
# Shared by test_search_e2e.py, test_postgres.py and test_dashboard.py: the CLI run as a
# subprocess, one micro supernet per session and one searched study per session.
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
#: The searched study's budget (inside micro's 0.16 to 14.5 MFLOPs range).
MICRO_BUDGET_TEXT = "8MFLOPs"
MICRO_BUDGET_FLOPS = 8_000_000
MICRO_TRIALS = 6


def cli_environment(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: one intra-op thread each (the CPU is small and
    shared; oversubscribed torch threads are several times slower) and this checkout first
    on the import path."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")]))
    environment.update(extra)
    return environment


def cli_command(*arguments: str) -> list[str]:
    """``python -m nas_search.cli ARGUMENTS`` with this interpreter."""
    return [sys.executable, "-m", "nas_search.cli", *arguments]


CliRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def nas_cli() -> CliRunner:
    """Run the CLI in a working directory: ``nas_cli(cwd, *arguments, timeout=..., env=...)``."""

    def run(cwd: Path, *arguments: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            cli_command(*arguments), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or cli_environment()
        )

    return run


@pytest.fixture(scope="session")
def micro_supernet(tmp_path_factory: pytest.TempPathFactory, nas_cli: CliRunner) -> Path:
    """A micro supernet trained once per session (1 epoch on 128 demo images)."""
    directory = tmp_path_factory.mktemp("micro-supernet")
    checkpoint = directory / "supernet.pt"
    result = nas_cli(
        directory,
        "supernet",
        "train",
        "--space",
        "micro",
        "--epochs",
        "1",
        "--max-train",
        "128",
        "--batch-size",
        "32",
        "--random-subnets",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(checkpoint),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint.is_file()
    return checkpoint


@dataclass(frozen=True)
class SearchedStudy:
    """A finished ``nas-search run`` on the micro space: its working directory (holding
    ``studies/``), study name, the command's arguments and output, and the JSON summary."""

    directory: Path
    name: str
    arguments: tuple[str, ...]
    stdout: str
    stderr: str
    summary: dict

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.directory / 'studies' / (self.name + '.db')}"


def micro_run_arguments(study: str, supernet: Path, trials: int = MICRO_TRIALS, *extra: str) -> tuple[str, ...]:
    """``run`` arguments for a quick micro search that reuses ``supernet``."""
    return (
        "run",
        "--space",
        "micro",
        "--budget",
        MICRO_BUDGET_TEXT,
        "--supernet",
        str(supernet),
        "--max-val",
        "100",
        "--trials",
        str(trials),
        "--startup-trials",
        "3",
        "--study",
        study,
        "--quiet",
        # no finalist re-ranking unless a test asks for it (``extra`` comes later and wins)
        "--finalists",
        "0",
        *extra,
    )


@pytest.fixture(scope="session")
def micro_study(tmp_path_factory: pytest.TempPathFactory, nas_cli: CliRunner, micro_supernet: Path) -> SearchedStudy:
    """One micro search per session. Tests that change the study work on a copy
    (``shutil.copytree(micro_study.directory, ...)``)."""
    directory = tmp_path_factory.mktemp("micro-study")
    arguments = micro_run_arguments("e2e", micro_supernet, MICRO_TRIALS, "--json-summary", "summary.json")
    result = nas_cli(directory, *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((directory / "summary.json").read_text())
    return SearchedStudy(directory, "e2e", arguments, result.stdout, result.stderr, summary)


@pytest.fixture(scope="session")
def detect_latency_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A partial ``detect`` latency table of this CPU (PyTorch eager, 1 thread, 416 px):
    every part of 12 random detectors spread over the space's cost range, plus parts of
    further detectors until every kind of part has entries (so that any detector can be
    predicted), and the 12 whole detectors measured. Returns (path, the 12 specs)."""
    import random as _random

    from nas_search.hw_models.latency import ProfileOptions, TimingOptions, model_parts, profile_table, sample_subnets
    from nas_search.tasks import get_space

    space = get_space("detect")
    specs = sample_subnets(space, 12, seed=5)
    parts: dict = {}

    def add(spec) -> None:
        for config in model_parts(space, space.resolve(spec), space.input_size):
            parts.setdefault(config.key, config)

    for spec in specs:
        add(spec)
    rng = _random.Random(6)
    kinds = {
        "stem",
        "mbconv",
        "dsc",
        "scc",
        "slim",
        "lateral",
        "fuse",
        "neck_block",
        "extra_level",
        "tower_layer",
        "predictors",
    }
    while kinds - {config.op for config in parts.values()}:
        add(space.sample(rng, bias=0.0))
    path = tmp_path_factory.mktemp("detect-table") / "detect-416px_cpu_torch_1t.json"
    options = ProfileOptions(device="cpu", runtime="torch", threads=1, timing=TimingOptions(warmup=1, repeats=3))
    profile_table(space, path, options, progress=False, blocks=parts.values(), specs=specs)
    return path, specs
