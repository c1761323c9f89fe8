"""The notebooks: both forms generated from notebooks/src and in sync, every Jupyter notebook executed on tiny data."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_build", REPO / "notebooks" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NAMES = build.names()
# Jobs without a notebook yet: adding one is a notebooks/src/<job>.py file (see notebooks/README.md).
WITHOUT_NOTEBOOK: set[str] = set()


def _ipynb(name: str) -> dict:
    return json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_every_job_has_a_notebook_or_is_listed_as_missing():
    jobs = {p.stem for p in (REPO / "jobs").glob("*.py")} - {"__init__"}
    assert set(NAMES) == jobs - WITHOUT_NOTEBOOK, "add notebooks/src/<job>.py or list the job in WITHOUT_NOTEBOOK"


def test_generated_notebooks_are_up_to_date(capsys):
    assert build.main(["--check"]) == 0, capsys.readouterr().out + " (run: python notebooks/build.py)"


@pytest.mark.parametrize("name", NAMES)
def test_databricks_notebook_parses_and_has_the_jupyter_cells(name):
    text = (REPO / "notebooks" / f"{name}.databricks.py").read_text()
    ast.parse(text)  # the %md / %pip cells are comments: the file is plain Python
    cells = build.parse_databricks(text)
    assert cells[0]["kind"] == "pip" and cells[0]["text"].startswith("%pip install")
    jupyter = [c for c in _ipynb(name)["cells"] if "injected-parameters" not in _tags(c)]
    assert len(cells) - 1 == len(jupyter)
    for databricks, cell in zip(cells[1:], jupyter):
        source = "".join(cell["source"])
        if "parameters" in _tags(cell):
            assert databricks["names"] == [n for n, _, _ in build.parameters_of(source)]
        else:
            assert (databricks["kind"] == "markdown") == (cell["cell_type"] == "markdown")
            assert databricks["text"] == source


def test_the_builder_turns_parameters_into_typed_widgets():
    cells = build.cells_of('# %% [parameters]\nepochs = 3  # passes\nname = "x"  # a name\nflag = True  # on?\n'
                           "# %% [ci]\nepochs = 1\n# %%\nprint(epochs)\n")
    assert [c["kind"] for c in cells] == ["parameters", "ci", "code"]
    text = build.to_databricks(build.notebook_cells(cells), "gp")
    namespace = {"dbutils": _FakeWidgets({"epochs": "5", "name": "y", "flag": "false"})}
    exec(build.parse_databricks(text)[2]["text"], namespace)
    assert (namespace["epochs"], namespace["name"], namespace["flag"]) == (5, "y", False)
    assert '%pip install --quiet "..[gp]"' in text


def test_the_local_profile_reads_as_spark_properties(tmp_path):
    from tfos_lib import notebook

    (tmp_path / "local.conf").write_text("# a comment\n\nspark.master   local[*]\nspark.sql.shuffle.partitions=8\n"
                                         "spark.driver.extraJavaOptions  -Da=b -Dc=d\n")
    assert notebook.read_profile(str(tmp_path / "local.conf")) == {
        "spark.master": "local[*]", "spark.sql.shuffle.partitions": "8", "spark.driver.extraJavaOptions": "-Da=b -Dc=d"}
    assert notebook.read_profile(str(tmp_path / "absent.conf")) == {}
    assert notebook.read_profile(str(REPO / "conf" / "local.conf"))["spark.sql.shuffle.partitions"] == "8"


class _FakeWidgets:
    def __init__(self, values):
        self.widgets, self.values = self, values

    def text(self, name, default, label):
        assert isinstance(default, str) and label.startswith(name)

    def dropdown(self, name, default, choices, label):
        assert default in choices

    def get(self, name):
        return self.values[name]


@pytest.fixture(scope="module")
def kernel():
    """One Jupyter kernel, at the repository root, for every notebook (``build.execute`` clears its names first)."""
    from jupyter_client import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(REPO))
    yield manager
    manager.shutdown_kernel(now=True)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_on_tiny_data(name, tmp_path, kernel):
    """Top to bottom with the source's [ci] values injected, in the kernel the notebooks share."""
    if not kernel.is_alive():  # an earlier notebook killed it: this one still gets a kernel of its own
        kernel.restart_kernel(now=True)
    injected = build.ci_parameters(name) + f"\noutput_dir = {str(tmp_path / 'out')!r}"
    executed = build.execute(_ipynb(name), injected, timeout=600, kernel=kernel)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook shows its plots inline"
    assert (tmp_path / "out" / "metrics.json").exists()
