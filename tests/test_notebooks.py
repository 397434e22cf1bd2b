"""Every teaching notebook runs top to bottom in a real kernel, and its key numbers hold.

A notebook ends with a cell tagged ``results`` that prints one JSON object of the numbers it
demonstrates; the checks below are the claims the notebook's prose makes about them.
"""

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHECKS = {
    "01_why_two_sparse_factors": lambda r: (
        r["dsf_error"] < r["magnitude_error"] and r["dsf_error"] < r["svd_error"]
        and r["hadamard_hierarchical_error"] < 1e-8 < r["hadamard_svd_error"]
        and r["lowrank_svd_error"] < r["lowrank_dsf_error"] + 1e-6
        and r["sparse_product_rank"] > r["svd_rank"]
    ),
    "02_dsf_step_by_step": lambda r: (
        r["final_error"] < r["first_round_error"]
        and r["aware_weighted_error"] < r["free_weighted_error"]
        and r["refit_weighted_error"] <= r["no_refit_weighted_error"] + 1e-9
    ),
    "03_palm4msa_and_butterflies": lambda r: (
        r["hadamard_error"] < 1e-10 and r["nonzeros_per_row"] == 2
        and r["hadamard_nonzeros"] < r["hadamard_dense_entries"]
    ),
    "04_compress_a_model": lambda r: (
        r["dsf_accuracy"] > r["magnitude_accuracy"] and r["dsf_accuracy"] > r["wanda_accuracy"]
        and r["dsf_perplexity"] < r["magnitude_perplexity"]
        and r["compressed_file_bytes"] < r["dense_file_bytes"]
    ),
}


def run_notebook(path: Path) -> tuple[dict, float]:
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    cells = [c for c in notebook.cells if "results" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'results'"
    text = "".join(o.get("text", "") for o in cells[0].outputs if o.get("output_type") == "stream")
    return json.loads(text), seconds


def test_every_notebook_is_checked():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_and_its_numbers_hold(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit without outputs"
    results, seconds = run_notebook(path)
    print(f"{name}: {seconds:.1f} s, {results}")
    assert CHECKS[name](results), results
