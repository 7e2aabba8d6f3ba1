"""The notebooks run top to bottom against the package as it is, and are committed run.

Each notebook is executed in a fresh kernel of this interpreter (so the installed package,
not whatever "python3" kernel the machine registered), from the notebooks directory, as a
reader would run it. The committed copies must carry their outputs, and those outputs
must hold no e-mail address or IP address in the clear.
"""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01-rule-tuning.ipynb", "02-model-review.ipynb", "03-daily-operations.ipynb")
CELL_TIMEOUT_SECONDS = 120
KERNEL_NAME = "riskscore-notebook-test"

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@pytest.fixture
def this_interpreter_kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec that starts ipykernel with the interpreter running the tests."""
    spec = tmp_path / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "riskscore (tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    return KERNEL_NAME


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [
        f"{output.ename}: {output.evalue}"
        for cell in _code_cells(notebook)
        for output in cell.outputs
        if output.output_type == "error"
    ]


def test_the_three_notebooks_are_there_and_numbered():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_carries_its_outputs_in_order_without_errors(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    counts = [cell.execution_count for cell in _code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1))
    assert _errors(notebook) == []
    images = [
        output
        for cell in _code_cells(notebook)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_hold_no_email_or_ip_address(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    texts = []
    for cell in _code_cells(notebook):
        for output in cell.outputs:
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
    text = "\n".join(t if isinstance(t, str) else "".join(t) for t in texts)
    assert EMAIL.findall(text) == []
    assert IPV4.findall(text) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_without_errors(name, this_interpreter_kernel):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name=this_interpreter_kernel,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    assert _errors(notebook) == []
    assert all(cell.execution_count for cell in _code_cells(notebook))
