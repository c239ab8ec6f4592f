"""ecot.model never imports timm or torchvision; its CLI module imports nothing heavy."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import ecot.model

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_no_module_imports_timm_or_torchvision():
    modules = [m.name for m in pkgutil.iter_modules(ecot.model.__path__, "ecot.model.")]
    assert {"ecot.model.vit", "ecot.model.vla", "ecot.model.checkpoint"} <= set(modules)
    code = f"""
import importlib, sys
# (transformers probes for torchvision with find_spec; only an actual import lands in sys.modules)
for name in {modules!r}:
    importlib.import_module(name)
from ecot.model import VLA, VLAConfig
VLA(VLAConfig.preset('tiny-dinosiglip'), device='meta')
bad = [m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision')]
assert not bad, bad
print('ok')
"""
    result = _run(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_cli_module_is_light():
    result = _run("import sys, ecot.model.cli, ecot.model; heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; print(heavy)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_source_mentions_an_import_of_timm_or_torchvision():
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(timm|torchvision)\b", re.MULTILINE)
    offenders = [p.name for p in Path(ecot.model.__path__[0]).glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_the_suite_runs_on_transformers_5():
    """docs/model.md says the suite is tested with transformers 5.x (the annotation backend tests import
    transformers-5-only image processor modules); this test fails if it is run on another major version."""
    import transformers

    assert int(transformers.__version__.split(".")[0]) == 5, transformers.__version__
    import transformers.models.clip.image_processing_pil_clip  # noqa: F401  (the first 5.x-only module those tests use)
