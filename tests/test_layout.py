"""The shape of the package: imports run one way (command line on top, the
backend and the files at the bottom) with no cycles, each run-folder file name
is spelled in one module, the training loop reaches no reporting, and the
commands that build no model import no Keras backend."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vggcifar"

#: Each module's floor: a module may import from its own floor or below, never above.
FLOORS = {
    "cli": 7, "__main__": 7, "options": 7,
    "api": 6,
    "runs": 5, "bench": 5, "seeds": 5,
    "loop": 4, "evaluation": 4, "prediction": 4, "export": 4, "report": 4, "record": 4, "comparison": 4, "hooks": 3,
    "inference": 3, "checkpoint": 3, "progress": 3, "plots": 3, "steps": 3, "liveview": 3, "build": 3, "settings": 3,
    "model": 2, "data": 2, "cifarfiles": 2, "download": 2, "rundir": 2, "backend": 2, "config": 2,
    "table": 2, "images": 2, "fixtures": 2, "budget": 2, "order": 2, "request": 2, "supervisor": 2,
    "imagefolder": 2,
    "fsutil": 1, "metrics": 1, "safepickle": 1, "quietlog": 1, "cluster": 1, "stops": 1,
}


def _imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vggcifar"):
            if node.module == "vggcifar":  # from vggcifar import a, b
                found.update(alias.name for alias in node.names if (SRC / f"{alias.name}.py").exists())
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("vggcifar."))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in SRC.glob("*.py") if p.stem != "__init__"}


def test_every_module_has_a_floor_and_says_what_it_owns(graph):
    assert set(graph) == set(FLOORS), "a module was added or removed: give it a floor in FLOORS"
    for name in graph:
        doc = ast.get_docstring(ast.parse((SRC / f"{name}.py").read_text(encoding="utf-8")))
        assert name == "__main__" or (doc and doc.strip()), f"{name}.py has no docstring saying what it owns"


def test_imports_never_climb(graph):
    climbs = [f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})"
              for a, targets in graph.items() for b in targets if FLOORS[b] > FLOORS[a]]
    assert not climbs, climbs


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # The check can fail: a cycle three modules long is found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_the_training_loop_reaches_no_reporting(graph):
    reached, todo = set(), ["loop"]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    assert not reached & {"report", "plots", "cli", "runs", "evaluation", "record"}, sorted(reached)


def _strings(path: Path) -> list[str]:
    """The string constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("name", ["metrics.json", "history.csv", "config.json", "run.json", "environment.json",
                                  "model.keras", "confusion_matrix.csv", "confusion_matrix.png", "curves.png",
                                  "report.md", "comparison.md", "comparison.json", "checkpoints",
                                  "mistakes.png", "recall.png", "tensorboard", "seeds.json",
                                  "validation_curves.png"])
def test_each_run_folder_name_is_spelled_in_one_module(name):
    # A name as the code uses it for a path: the whole string, or a path's
    # first or last part (prose in messages may mention a file).
    def names_it(s: str) -> bool:
        return s == name or s.endswith("/" + name) or s.startswith(name + "/")

    spelled = sorted(p.stem for p in SRC.glob("*.py") if any(names_it(s) for s in _strings(p)))
    assert spelled == ["rundir"], f"{name!r} is spelled in {spelled}"


# `vggcifar --help`, `recipes`, `data info` and `compare` answer without keras
# (5-6 s of imports with TensorFlow), and a wrong recipe or setting, or a model
# file that is not there, is refused before keras is imported. One fresh
# process runs every such command through the CLI, saying after each its status
# and whether keras is imported (once imported, it stays in sys.modules); then
# the control: a right command goes on to import keras (and is stopped there,
# its data folder missing), which shows the check can fail.
ANSWERED = [["--help"], ["recipes"], ["recipes", "spec", "--json"], ["data", "info", "{archive}"],
            ["compare", "{run}", "--output", "{cmp}"]]
REFUSED = [["train", "--recipe", "foo"], ["experiment", "--recipe", "spec,foo", "--epochs", "2"],
           ["train", "--set", "width=-1"], ["train", "--set", "colour=red"],
           ["experiment", "--seeds", "0,1", "--set", "batch_size=0"], ["train", "--recipe", "spec-he", "--lr", "-1"],
           ["evaluate", "no-such-model.keras"], ["predict", "no-such-model.keras", "."],
           ["export", "no-such-model.keras", "--format", "onnx", "--output", "x.onnx"]]
CONTROL = ["train", "--data", "no-such-folder", "--epochs", "1"]


@pytest.fixture(scope="module")
def without_keras(tmp_path_factory) -> tuple[list[str], str]:
    """The STATUS lines of ANSWERED then REFUSED, and the whole stderr, CONTROL's line last."""
    from vggcifar import fixtures, fsutil

    folder = tmp_path_factory.mktemp("no-keras")
    archive = fixtures.write_archive(folder / "c.tar.gz", *fixtures.random_arrays(10, 4))
    run = folder / "run"  # a run folder's records, enough for `compare`
    fsutil.write_json(run / "run.json", {"milestones": [1], "data": {}})
    fsutil.write_json(run / "metrics.json", {"epoch": 1, "test_accuracy": 0.5, "status": "complete"})
    (run / "history.csv").write_text("epoch,val_loss,val_accuracy\n1,1.0,0.5\n")
    paths = {"archive": archive, "run": run, "cmp": folder / "cmp"}
    commands = [[a.format(**paths) for a in argv] for argv in ANSWERED] + REFUSED
    code = (
        "import sys\n"
        "from vggcifar.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    try:\n"
        "        status = main(argv)\n"
        "    except SystemExit as exc:\n"
        "        status = exc.code\n"
        "    print('STATUS', argv[0], status, 'KERAS', 'keras' in sys.modules, file=sys.stderr)\n"
        f"main({CONTROL!r})\n"
        "print('CONTROL', 'keras' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return [line for line in out.stderr.splitlines() if line.startswith("STATUS")], out.stderr


def test_commands_that_build_no_model_import_no_backend(without_keras):
    lines, stderr = without_keras
    assert lines[:len(ANSWERED)] == [f"STATUS {argv[0]} 0 KERAS False" for argv in ANSWERED], stderr[-2000:]
    assert "CONTROL True" in stderr


def test_a_wrong_recipe_or_setting_is_refused_before_keras_is_imported(without_keras):
    # Each refused in one line with status 2, keras never imported.
    statuses, stderr = without_keras
    assert statuses[len(ANSWERED):] == [f"STATUS {argv[0]} 2 KERAS False" for argv in REFUSED], stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("vggcifar: error:")]
    assert errors[0] == ("vggcifar: error: Unknown recipe. Expected one of spec, spec-he, vgg16-bn. "
                         "Received: recipe='foo'")
    assert "Received: width=-1" in errors[2] and "Unknown config key 'colour'" in errors[3]
    assert errors[-4:-1] == ["vggcifar: error: no-such-model.keras: no such model file"] * 3  # then the control's
    assert "CONTROL True" in stderr


def test_the_architecture_page_names_each_module_on_its_floor():
    import re

    page = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    on_page = {}
    for line in page.splitlines():
        if m := re.match(r"\| (\d+): [^|]+\| (.+) \|$", line):
            for name in re.findall(r"`(\w+)`", m.group(2)):
                on_page[name] = int(m.group(1))
    assert on_page == FLOORS, {k: (on_page.get(k), FLOORS.get(k)) for k in set(on_page) ^ set(FLOORS)
                               or {k for k in FLOORS if on_page.get(k) != FLOORS[k]}}
    assert len(page.splitlines()) <= 60
