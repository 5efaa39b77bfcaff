"""The split is the architecture: the core never imports Streamlit, pages stay thin."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_core_never_imports_streamlit_statically():
    offenders = []
    for path in (REPO / "comfypanel").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_core_does_not_pull_streamlit_in_at_runtime():
    code = (
        "import sys, comfypanel, comfypanel.cli, comfypanel.events, comfypanel.devserver, comfypanel.jobs;"
        "print('streamlit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_pages_are_thin():
    for page in (REPO / "pages").glob("*.py"):
        assert len(page.read_text().splitlines()) < 250, f"{page.name} should move logic into components/ or comfypanel/"
