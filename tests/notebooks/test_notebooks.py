"""The notebooks run top to bottom against the package as it is, and are committed run.

Each notebook is executed with papermill, as an analyst passes parameters to it, in a fresh
kernel of this interpreter (so the installed package, not whatever "python3" kernel the
machine registered), from the notebooks directory. Each has one cell tagged
``parameters``; notebook 03 runs twice, on simulated traffic and on a real export: a
service scores a simulated log (labels fed back), ``riskscore export`` writes
``decisions.parquet``, and the notebook reads it. The committed copies must carry their
outputs, and no output, committed or from these runs, may hold an e-mail address or an IP
address in the clear.
"""

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import papermill
import pytest

from tests.reliability.conftest import FEEDBACK_KEY, SCORE_KEY, RedisServer, ServiceProcess
from training.cli import main
from training.replay import replay
from training.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01-rule-tuning.ipynb", "02-model-review.ipynb", "03-daily-operations.ipynb")
CELL_TIMEOUT_SECONDS = 180
KERNEL_NAME = "riskscore-notebook-test"
# What each run passes (smaller logs than the committed runs, to keep the suite quick).
PARAMETERS = {
    "01-rule-tuning.ipynb": {"ROWS": 30_000},
    "02-model-review.ipynb": {"ROWS": 30_000},
    "03-daily-operations.ipynb": {"ROWS": 20_000, "VERTICAL": "gaming"},
}

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


def _output_text(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in _code_cells(notebook):
        for output in cell.outputs:
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
            texts.append(output.get("evalue", ""))
    return "\n".join(t if isinstance(t, str) else "".join(t) for t in texts)


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in _code_cells(notebook)
        for output in cell.outputs
    )


def _run(name: str, out: Path, kernel: str, **parameters: object) -> nbformat.NotebookNode:
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / name),
        str(out),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(NOTEBOOK_DIR),
        execution_timeout=CELL_TIMEOUT_SECONDS,
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def test_the_three_notebooks_are_there_and_numbered():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_has_one_tagged_parameters_cell_naming_what_runs_pass(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    for parameter in [
        *PARAMETERS[name],
        "LOG_PATH" if name != "03-daily-operations.ipynb" else "EXPORT_DIR",
    ]:
        assert re.search(rf"^{parameter}\b|, {parameter}\b", tagged[0].source, re.M), parameter


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_carries_its_outputs_in_order_without_errors(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    counts = [cell.execution_count for cell in _code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1))
    assert _errors(notebook) == []
    assert _images(notebook) >= 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_hold_no_email_or_ip_address(name):
    text = _output_text(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
    assert EMAIL.findall(text) == []
    assert IPV4.findall(text) == []


def test_no_notebook_edits_yaml_with_regular_expressions():
    """Rule drafts go through training.rule_drafts (ruamel.yaml round-trip)."""
    for name in NOTEBOOKS:
        source = "\n".join(c.source for c in _code_cells(nbformat.read(NOTEBOOK_DIR / name, 4)))
        assert "re.sub" not in source and "write_text" not in source, name


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_with_parameters(name, this_interpreter_kernel, tmp_path):
    notebook = _run(name, tmp_path / name, this_interpreter_kernel, **PARAMETERS[name])
    assert _errors(notebook) == []
    assert all(cell.execution_count for cell in _code_cells(notebook))
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    text = _output_text(notebook)
    assert EMAIL.findall(text) == [] and IPV4.findall(text) == []
    if name == "03-daily-operations.ipynb":
        assert "(gaming)" in text  # the vertical passed in is the one reported


@pytest.fixture(scope="module")
def real_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``riskscore export`` of a service that scored a simulated log, labels fed back."""
    workdir = tmp_path_factory.mktemp("notebook-export")
    redis_server = RedisServer().start()
    service = ServiceProcess(redis_server.url, workdir, env={"RISKSCORE_CLOCK": "event"})
    try:
        service.start()
        log = simulate(1500, seed=17, days=6)

        async def send() -> dict:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
                return await replay(
                    log,
                    client=client,
                    api_key=SCORE_KEY,
                    feedback_key=FEEDBACK_KEY,
                    concurrency=4,
                    all_labels=True,
                )

        result = asyncio.run(send())
        assert result["non_2xx"] == 0
        out = workdir / "export"
        argv = ["export", "--out", str(out), "--redis-url", redis_server.url]
        assert main([*argv, "--prefix", service.prefix, "--json"]) == 0
        yield out
    finally:
        service.stop()
        redis_server.kill()


@pytest.mark.slow
def test_daily_operations_reads_a_real_export(
    real_export, this_interpreter_kernel, tmp_path, capsys
):
    capsys.readouterr()
    name = "03-daily-operations.ipynb"
    notebook = _run(name, tmp_path / name, this_interpreter_kernel, EXPORT_DIR=str(real_export))
    assert _errors(notebook) == []
    text = _output_text(notebook)
    assert f"export {real_export}:" in text
    assert re.search(r"1,\d{3} payments decided", text)  # every payment of the export's days
    agreement = re.search(r"decide (\d+\.\d)% of these payments as the service did", text)
    assert agreement and float(agreement.group(1)) > 50.0
    assert EMAIL.findall(text) == [] and IPV4.findall(text) == []
    assert _images(notebook) >= 2
