"""The public Python API (``nas_search.run``, ``export_trial``, ``train``, ``cost_report``,
``get_space``, ``space_names``): the README's example run as written, a cheap and cycle-free
``import nas_search``, and each verb's basic behaviour. Real runs, no mocks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nas_search
from nas_search.errors import UserError

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict[str, str]:
    """Subprocess environment: one thread (small shared CPU), this checkout importable."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def run_python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment()
    )


def readme_example() -> str:
    """The README's Python example: the first ```python block that imports nas_search."""
    text = (REPOSITORY_ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith("import nas_search"):
            return block
    raise AssertionError("README.md has no ```python block starting with `import nas_search`")


def test_readme_example_runs(tmp_path: Path) -> None:
    example = readme_example()
    assert len(example.strip().splitlines()) <= 6
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "['cifar', 'detect', 'micro', 'mobile']"
    assert lines[1] == "14522880"
    assert lines[-1].startswith("micro:") and "sqlite:///studies/nas-search.db" in lines[-1]
    assert (tmp_path / "studies" / "nas-search.db").is_file()


def test_import_is_cheap_and_cycle_free(tmp_path: Path) -> None:
    """``import nas_search`` loads no submodule and no torch, and sets OMP_WAIT_POLICY;
    importing a bottom module pulls in none of the layers above it."""
    code = (
        "import os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "import nas_search\n"
        "print(sorted(m for m in sys.modules if m.startswith('nas_search')), 'torch' in sys.modules,"
        " os.environ['OMP_WAIT_POLICY'])\n"
        "import nas_search.spec\n"
        "print(sorted(m for m in sys.modules if m.startswith('nas_search')))\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == "['nas_search'] False PASSIVE"
    layers = ("search", "export", "cost", "dashboard", "tasks", "training", "evaluators", "hw_models", "spaces", "cli")
    loaded = ast.literal_eval(second)  # a printed list of module names
    assert "nas_search.spec" in loaded
    assert not [name for name in loaded if name.split(".")[1:2] and name.split(".")[1] in layers]


def test_version_matches_the_project() -> None:
    pyproject = (REPOSITORY_ROOT / "pyproject.toml").read_text()
    assert f'version = "{nas_search.__version__}"' in pyproject
    assert set(nas_search.__all__) >= {"run", "export_trial", "train", "cost_report", "get_space", "space_names"}


def test_spaces() -> None:
    names = nas_search.space_names()
    assert names == sorted(names) and {"micro", "mobile", "cifar", "detect"} <= set(names)
    assert "detect" in nas_search.space_names("detect") and "detect" not in nas_search.space_names("classify")
    space = nas_search.get_space("micro")
    assert space.name == "micro"
    with pytest.raises(UserError, match="nonexistent"):
        nas_search.get_space("nonexistent")


def test_cost_matches_the_analytic_counter(tmp_path: Path) -> None:
    from nas_search.hw_models.flops import count_flops

    space = nas_search.get_space("micro")
    spec = space.smallest()
    report = nas_search.cost_report(spec)
    breakdown = count_flops(spec, space, space.input_size, None)
    assert (report["flops"], report["params"], report["space"]) == (breakdown.flops, breakdown.params, "micro")
    path = tmp_path / "arch.yaml"
    path.write_text(spec.to_yaml())
    assert nas_search.cost_report(path, input_size=64)["input_size"] == 64
    with pytest.raises(UserError, match="not found"):
        nas_search.cost_report(tmp_path / "missing.yaml")


def test_search_refuses_bad_options_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="unknown option.*bogus"):
        nas_search.run(space="micro", bogus=1)
    with pytest.raises(UserError, match="trials"):
        nas_search.run(space="micro", trials="many")
    assert not (tmp_path / "studies").exists()


def test_export_and_train_refuse_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no study database"):
        nas_search.export_trial(study="absent", out=tmp_path / "out")
    with pytest.raises(UserError, match="unknown option.*speed"):
        nas_search.train(tmp_path / "train.yaml", speed=2)
    with pytest.raises(UserError, match="not found"):
        nas_search.train(tmp_path / "train.yaml")


def test_search_export_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The three verbs chained, as the command line chains run, export and train."""
    monkeypatch.chdir(tmp_path)
    summary = nas_search.run(
        space="micro",
        trials=2,
        startup_trials=2,
        supernet_epochs=1,
        max_train=64,
        max_val=32,
        calibration_images=32,
        study="api",
        objectives="accuracy",
        progress=False,
    )
    assert summary["study"] == "api" and summary["trials"] == 2 and summary["best"]
    exported = nas_search.export_trial(study="api", out="exported", epochs=1)
    assert exported["trial"] == summary["best"]["trial"]
    for name in ("arch.yaml", "train.yaml", "model.pt", "model.onnx", "meta.json"):
        assert (tmp_path / "exported" / name).is_file()
    result = nas_search.train("exported/train.yaml", max_train=64, max_val=32, out="trained", progress=False)
    assert result["epochs"] == 1 and 0.0 <= result["accuracy"] <= 1.0
    assert Path(result["weights"]).resolve().parent == (tmp_path / "trained").resolve()


def test_functions_survive_submodule_imports() -> None:
    """Importing the submodules (which sets package attributes) leaves the API functions in place."""
    import importlib

    for name in ("nas_search.search.runner", "nas_search.export", "nas_search.cost", "nas_search.tasks"):
        importlib.import_module(name)
    for name in ("run", "export_trial", "train", "cost_report", "get_space", "space_names"):
        assert callable(getattr(nas_search, name)) and getattr(nas_search, name).__module__ == "nas_search", name
