"""The package layout follows the data flow (pipeline/__init__.py): every import of lmpipe's own
code, at module level or inside a function, points back along the flow, never up it; no two
modules import each other, directly or through others (inside a folder too); and each DVC stage
lists as code deps exactly the modules it can run."""
import ast
import graphlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# position in the flow (pipeline/__init__.py, the layout's docstring, imports nothing); ngram and
# neural share one, so neither may import the other
FLOW = {"__init__": 0, "errors": 0, "validation": 0, "out_of_core": 0, "files": 1, "text": 2, "config": 3, "ngram": 4, "neural": 4,
        "evaluation": 5, "tracking": 6, "cli": 7, "stages": 8}
MLFLOW_ALLOWED = {"tracking", "cli", "stages"}
TORCH_ONLY = {"pipeline/neural/cells.py", "pipeline/neural/rnn.py", "pipeline/neural/losses.py"}


def unit_of(path: Path) -> str:
    """The flow unit of a source file: its folder under pipeline/ (or config/files/errors), or
    stages."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "stages":
        return "stages"
    return parts[1]


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the tree; `from pipeline import a, b` gives
    pipeline.a and pipeline.b."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                found += [(node.lineno, f"pipeline.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def back_arrows(source: str, unit: str) -> list[str]:
    """Imports in `source` (a module of `unit`) that point up the flow or sideways to a peer."""
    wrong = []
    for line, module in imported(ast.parse(source)):
        parts = module.split(".")
        if parts[0] != "pipeline" or len(parts) < 2:
            continue
        target = parts[1]
        if target not in FLOW:
            wrong.append(f"line {line}: {module} is in no folder of the flow")
        elif target != unit and FLOW[target] >= FLOW[unit]:
            wrong.append(f"line {line}: {unit} imports {module}")
    return wrong


def sources():
    return sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py")])


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_back_along_the_flow(path):
    assert back_arrows(path.read_text(), unit_of(path)) == []


def test_a_back_arrow_is_caught():
    assert back_arrows("from pipeline.evaluation import scoring\n", "neural") == [
        "line 1: neural imports pipeline.evaluation"]
    assert back_arrows("def f():\n    from pipeline.neural.rnn import RNNLM\n", "ngram") == [
        "line 2: ngram imports pipeline.neural.rnn"]
    assert back_arrows("from pipeline import tracking, files\n", "text") == [
        "line 1: text imports pipeline.tracking"]
    assert back_arrows("from pipeline import corpus\n", "cli") == [
        "line 1: pipeline.corpus is in no folder of the flow"]
    assert back_arrows("from pipeline.text import vocab\nimport numpy\n", "evaluation") == []


def test_every_module_belongs_to_a_folder_of_the_flow():
    assert {unit_of(p) for p in sources()} <= set(FLOW)
    loose = {p.name for p in ROOT.glob("pipeline/*.py")} - {"__init__.py", "config.py", "files.py",
                                                             "errors.py", "validation.py", "out_of_core.py"}
    assert not loose, f"modules outside the flow's folders: {sorted(loose)}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_tracking_talks_to_mlflow_and_models_need_only_torch(path):
    modules = {m.split(".")[0] for _, m in imported(ast.parse(path.read_text()))}
    if unit_of(path) not in MLFLOW_ALLOWED:
        assert "mlflow" not in modules
    if str(path.relative_to(ROOT)) in TORCH_ONLY:
        assert "lightning" not in modules


def test_package_init_files_hold_only_their_contract():
    """No re-exports: an __init__.py is its folder's docstring and nothing else."""
    for path in ROOT.glob("pipeline/**/__init__.py"):
        body = ast.parse(path.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value.value, str), path


def imported_names(source: str) -> set[str]:
    """The dotted names every import of `source` can bind, at module level or in a function body:
    `from pipeline.x import y` gives pipeline.x and pipeline.x.y (y may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_files(path: Path) -> set[Path]:
    """The lmpipe source files `path` imports (at module level or in a function body)."""
    candidates = (ROOT / (name.replace(".", "/") + ".py") for name in imported_names(path.read_text())
                  if name.split(".")[0] == "pipeline")
    return {candidate for candidate in candidates if candidate.is_file()}


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """{module: the modules of `modules` it imports}, from {dotted name: source}."""
    return {name: (imported_names(source) & modules.keys()) - {name}
            for name, source in modules.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as [a, b, ..., a] (graphlib's), or [] when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return []


def test_no_import_cycles():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p.read_text() for p in sources()}
    found = cycle(import_graph(modules))
    assert not found, "import cycle: " + " -> ".join(found)


def test_a_cycle_inside_a_folder_is_caught():
    """Both directions inside one folder (the flow allows them), one hidden in a function."""
    modules = {"pipeline.cli.a": "from pipeline.cli import b\n",
               "pipeline.cli.b": "def f():\n    from pipeline.cli.a import g\n",
               "pipeline.cli.c": "import pipeline.cli.a\n"}
    assert sorted(cycle(import_graph(modules))[:2]) == ["pipeline.cli.a", "pipeline.cli.b"]
    del modules["pipeline.cli.b"]
    assert cycle(import_graph(modules)) == []


def runs(entry: Path) -> set[str]:
    """Every lmpipe module the stage script `entry` can run: the transitive closure of its
    imports (function-level ones included, so the list errs on the safe side), as paths
    relative to the repository, without the docstring-only __init__.py files."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += module_files(path)
    return {str(p.relative_to(ROOT)) for p in seen}


def code_deps(stage: dict) -> tuple[set[str], list[str]]:
    """(the .py files the stage's code deps stand for, the folders among them)."""
    files, folders = set(), []
    for dep in stage["deps"]:
        path = ROOT / dep
        if path.is_dir() and dep.startswith(("pipeline", "stages")):
            folders.append(dep)
            files |= {str(p.relative_to(ROOT)) for p in path.rglob("*.py") if p.name != "__init__.py"}
        elif dep.endswith(".py"):
            files.add(dep)
    return files, folders


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(name):
    stage = STAGES[name].get("do", STAGES[name])       # train: the foreach template
    entry = ROOT / (re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1).replace(".", "/") + ".py")
    needed = runs(entry)
    listed, folders = code_deps(stage)
    assert needed - listed == set(), f"{name}: runs modules dvc.yaml does not list as deps"
    assert listed - needed == set(), f"{name}: lists modules it never runs (editing them reruns it)"
    for folder in {str(Path(p).parent) for p in needed if p.startswith("pipeline/")} - {"pipeline"}:
        every = {str(p.relative_to(ROOT)) for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        if every <= needed:
            assert folder in folders, f"{name}: uses all of {folder}/; list the folder, not its files"
