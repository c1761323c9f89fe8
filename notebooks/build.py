"""Builds each job's two notebooks from one source: ``src/<job>.py`` -> ``<job>.ipynb`` + ``<job>.databricks.py``.

A source is a Python file in the "percent" cell format::

    # %% [markdown]
    # # Title, the book's chapter, the data ...
    # %% [parameters]
    epochs = 10  # passes over the training data        <- one widget each on Databricks
    # %% [ci]
    epochs = 1  # tiny values the tests (and --execute) inject after the parameters
    # %%
    from jobs import mnist                              <- calls the job's own functions
    # %% [pip]
    gp                                                  <- optional: the extras the %pip cell installs

Both forms start with the same setup cell (the repository root as working directory and on
``sys.path``, so ``import jobs`` works; the active Spark session or ``local[2]``). The Jupyter
form tags the parameters cell ``parameters`` (papermill's convention); the Databricks form
(``# Databricks notebook source``, cells split by ``# COMMAND ----------``) adds a ``%pip install``
cell first and turns the parameters into ``dbutils.widgets``.

Usage (from the repository root)::

    python notebooks/build.py                  # regenerate every notebook's two forms (keeps .ipynb outputs)
    python notebooks/build.py --execute mnist  # also run mnist.ipynb on the [ci] values, keeping its outputs
    python notebooks/build.py --check          # exit 1 if a generated file is out of date
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCES = HERE / "src"
DATABRICKS_HEADER = "# Databricks notebook source"
COMMAND = "# COMMAND ----------"
MAGIC = "# MAGIC"
SETUP = """\
from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]"""
_MARKER = re.compile(r"^# %%(?: \[(\w+)\])?\s*$")


def cells_of(source: str) -> list[dict]:
    """The cells of a percent-format source: ``{"kind": markdown|parameters|ci|pip|code, "text": ...}``."""
    cells: list[dict] = []
    for line in source.splitlines():
        marker = _MARKER.match(line)
        if marker:
            cells.append({"kind": marker[1] or "code", "lines": []})
        elif cells:
            cells[-1]["lines"].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"the source must start with a '# %%' cell marker; found {line!r}")
    for cell in cells:
        lines = cell.pop("lines")
        while lines and not lines[-1].strip():
            lines.pop()
        if cell["kind"] == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        cell["text"] = "\n".join(lines)
    return cells


def parameters_of(text: str) -> list[tuple[str, object, str]]:
    """``(name, default, help)`` of each ``name = literal  # help`` line of a parameters cell."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        code, _, comment = line.partition("  # ")
        node = ast.parse(code).body[0]
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"a parameters line must be `name = literal  # help`; found {line!r}")
        found.append((node.targets[0].id, ast.literal_eval(node.value), comment.strip()))
    return found


def notebook_cells(cells: list[dict]) -> list[dict]:
    """The cells both forms have, in order: the first markdown cell, the setup, then the rest (no ci/pip)."""
    shown = [c for c in cells if c["kind"] not in ("ci", "pip")]
    first = 1 if shown and shown[0]["kind"] == "markdown" else 0
    return [*shown[:first], {"kind": "setup", "text": SETUP}, *shown[first:]]


def to_ipynb(cells: list[dict], old: dict | None = None) -> dict:
    """The Jupyter form; outputs of an ``old`` notebook whose cell sources are unchanged are kept."""
    previous = {(c["cell_type"], "".join(c["source"])): c for c in (old or {}).get("cells", [])}
    result = []
    for index, cell in enumerate(cells):
        kind = "markdown" if cell["kind"] == "markdown" else "code"
        kept = previous.get((kind, cell["text"]))
        if kept is not None:  # unchanged: keep its id, outputs and execution record
            result.append(kept)
            continue
        new = {"cell_type": kind, "id": f"cell-{index}", "metadata": {},
               "source": cell["text"].splitlines(keepends=True)}
        if kind == "code":
            new |= {"execution_count": None, "outputs": []}
            if cell["kind"] == "parameters":
                new["metadata"] = {"tags": ["parameters"]}
        result.append(new)
    return {
        "cells": result,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _widget(name: str, default: object, help: str) -> tuple[str, str]:
    label = json.dumps(f"{name}: {help}" if help else name)
    if isinstance(default, bool):
        choices = json.dumps(["true", "false"])
        return (f"dbutils.widgets.dropdown({name!r}, {json.dumps(str(default).lower())}, {choices}, {label})",
                f"{name} = dbutils.widgets.get({name!r}) == \"true\"")
    read = f"dbutils.widgets.get({name!r})"
    if isinstance(default, (int, float)):
        read = f"{type(default).__name__}({read})"
    return f"dbutils.widgets.text({name!r}, {json.dumps(str(default))}, {label})", f"{name} = {read}"


def to_databricks(cells: list[dict], extras: str = "") -> str:
    """The Databricks source form: a %pip cell, then the cells, the parameters as widgets."""
    target = f'"..[{extras}]"' if extras else ".."
    blocks = [f"{MAGIC} %pip install --quiet {target}"]
    for cell in cells:
        if cell["kind"] == "markdown":
            lines = [f"{MAGIC} {line}".rstrip() for line in cell["text"].splitlines()]
            blocks.append("\n".join([f"{MAGIC} %md", *lines]))
        elif cell["kind"] == "parameters":
            widgets = [_widget(*p) for p in parameters_of(cell["text"])]
            blocks.append("\n".join(["# Parameters: one widget each (the Jupyter form's `parameters` cell).",
                                     *(w for w, _ in widgets), "", *(r for _, r in widgets)]))
        else:
            blocks.append(cell["text"])
    return DATABRICKS_HEADER + "\n" + f"\n\n{COMMAND}\n\n".join(blocks) + "\n"


def parse_databricks(text: str) -> list[dict]:
    """A Databricks source notebook's cells, as ``{"kind", "text"}`` (markdown, pip, widgets or code)."""
    if not text.startswith(DATABRICKS_HEADER + "\n"):
        raise ValueError(f"a Databricks source notebook starts with {DATABRICKS_HEADER!r}")
    cells = []
    for block in text[len(DATABRICKS_HEADER) + 1 :].split(f"\n{COMMAND}\n"):
        block = block.strip("\n")
        if block.startswith(f"{MAGIC} %md"):
            lines = [line[len(MAGIC) + 1 :] for line in block.splitlines()[1:]]
            cells.append({"kind": "markdown", "text": "\n".join(lines)})
        elif block.startswith(f"{MAGIC} %pip"):
            cells.append({"kind": "pip", "text": block[len(MAGIC) + 1 :]})
        elif "dbutils.widgets." in block:
            names = re.findall(r"dbutils\.widgets\.get\('(\w+)'\)", block)
            cells.append({"kind": "parameters", "text": block, "names": names})
        else:
            cells.append({"kind": "code", "text": block})
    return cells


def build(name: str) -> dict[str, str]:
    """Writes ``<name>.ipynb`` (keeping unchanged cells' outputs) and ``<name>.databricks.py``; returns their text."""
    cells = cells_of((SOURCES / f"{name}.py").read_text())
    extras = ",".join(c["text"].strip() for c in cells if c["kind"] == "pip")
    shown = notebook_cells(cells)
    ipynb_path = HERE / f"{name}.ipynb"
    old = json.loads(ipynb_path.read_text()) if ipynb_path.exists() else None
    notebook = to_ipynb(shown, old)
    if old:  # keep the executed run's record (its injected values, its wall time)
        injected = [c for c in old["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        at = next((i + 1 for i, c in enumerate(notebook["cells"]) if "parameters" in c["metadata"].get("tags", [])),
                  None)
        if injected and at is not None:
            notebook["cells"].insert(at, injected[0])
        notebook["metadata"] = old["metadata"]  # the executing kernel's language_info, the run's wall time
    texts = {f"{name}.ipynb": dump(notebook),
             f"{name}.databricks.py": to_databricks(shown, extras)}
    return texts


def ci_parameters(name: str) -> str:
    """The source's ``[ci]`` cell: the tiny values injected after the parameters when the tests execute it."""
    return "\n".join(c["text"] for c in cells_of((SOURCES / f"{name}.py").read_text()) if c["kind"] == "ci")


def execute(notebook: dict, injected: str, timeout: int = 900, kernel=None) -> dict:
    """Runs ``notebook`` top to bottom in a kernel started at the repository root, ``injected`` after its parameters.

    ``kernel``: a running ``jupyter_client`` kernel manager to run it in instead of a new kernel (the tests run
    every notebook in one, as a Databricks cluster's notebooks share one Spark application). Its namespace is
    cleared first (``%reset -f``), so a notebook cannot lean on names an earlier one defined; imported modules,
    the Spark session and warm workers stay. Returns the executed notebook (outputs kept); raises nbclient's
    ``CellExecutionError`` on any error.
    """
    import nbformat
    from nbclient import NotebookClient

    cells = [c for c in notebook["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    at = next(i + 1 for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    cells.insert(at, {"cell_type": "code", "id": "injected-parameters", "execution_count": None, "outputs": [],
                      "source": injected,
                      "metadata": {"tags": ["injected-parameters"]}})
    if kernel is not None:
        cells.insert(0, {"cell_type": "code", "id": "injected-reset", "execution_count": None, "outputs": [],
                         "source": "%reset -f", "metadata": {"tags": ["injected-reset"]}})
    nb = nbformat.reads(json.dumps(notebook | {"cells": cells}), as_version=4)  # sources as strings
    started = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", km=kernel,
                   resources={"metadata": {"path": str(REPO)}}).execute()
    nb.metadata["tfos_lib"] = {"executed_seconds": round(time.perf_counter() - started, 1),
                               "executed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return nb


def dump(notebook: dict) -> str:
    """A notebook's file text, as nbformat writes it (stable, so that --check can compare)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def names() -> list[str]:
    return sorted(p.stem for p in SOURCES.glob("*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", nargs="*", metavar="NAME", help="execute these notebooks (none named: all)")
    parser.add_argument("--check", action="store_true", help="only check that the generated files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in names():
        for file, text in build(name).items():
            path = HERE / file
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(file)
            else:
                path.write_text(text)
    if args.check:
        print("out of date: " + ", ".join(stale) if stale else "all notebooks are up to date")
        return 1 if stale else 0
    for name in (args.execute or names()) if args.execute is not None else []:
        path = HERE / f"{name}.ipynb"
        executed = execute(json.loads(path.read_text()), ci_parameters(name))
        path.write_text(dump(executed))
        print(f"{name}.ipynb: executed in {executed.metadata['tfos_lib']['executed_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
