"""The robot-side client is light (no torch), and nothing in ecot.serve can unpickle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ecot.serve

REPO = Path(__file__).resolve().parents[2]
SERVE = Path(ecot.serve.__path__[0])


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_client_imports_neither_torch_nor_the_server_stack():
    code = (
        "import sys\nfrom ecot.serve.client import PolicyClient\nimport ecot.serve\n"
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'starlette', 'uvicorn', 'PIL') if m in sys.modules))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_cli_module_is_light():
    result = _run("import sys, ecot.serve.cli; print([m for m in ('torch', 'fastapi', 'numpy') if m in sys.modules])")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_module_of_ecot_serve_imports_pickle():
    banned = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
    files = sorted(SERVE.rglob("*.py"))
    assert {"app.py", "client.py", "protocol.py", "worker.py", "server.py", "cli.py"} <= {f.name for f in files}
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                names = [getattr(a, "value", "") for a in node.args[:1]]
            offenders += [f"{path.name}: {n}" for n in names if str(n).split(".")[0] in banned]
    assert offenders == []
