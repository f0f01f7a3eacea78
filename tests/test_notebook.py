"""The quickstart notebook runs top to bottom on the local checkout, and is stored clean."""

import os

import nbformat
from nbclient import NotebookClient
import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

NOTEBOOK = os.path.join(REPO, "notebooks", "stem_tfrs_quickstart.ipynb")


def test_notebook_is_committed_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_every_cell_without_error(monkeypatch):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Run where a user of the checkout would: in notebooks/ (the first cell finds
  # the checkout one level up); matplotlib draws off screen.
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
  monkeypatch.setenv("MPLBACKEND", "Agg")
  client.execute()  # raises CellExecutionError, naming the cell, on any error
  outputs = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for out in cell.outputs)
  assert "test   finish" in outputs and "saved_model.pb" in outputs
