"""The package's layers (docs/architecture.md): data -> nn -> train -> inference/uncertainty/screening -> workflows -> cli.
Every import of equiprop by equiprop, module-level or inside a function, is read from the source: no circles, and no
module imports one of a higher layer."""

import ast
import re
from pathlib import Path

import equiprop

PACKAGE = Path(equiprop.__file__).parent
REPO = PACKAGE.parents[1]
LAYERS = {"data": 0, "nn": 1, "train": 2, "shipped": 2, "inference": 3, "testing": 3, "uncertainty": 3, "screening": 3,
          "workflows": 4, "cli": 5}


def module_name(path: Path) -> str:
    return ".".join(("equiprop", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("equiprop"):
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("equiprop")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else max(LAYERS.values()) + 1  # the package root sits on top


def test_every_module_belongs_to_a_layer():
    assert {m.split(".")[1] for m in import_graph() if "." in m} <= set(LAYERS)


def test_no_import_goes_up_a_layer():
    upward = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
              if "." in a and layer(b) > layer(a)]
    assert upward == []


def test_no_import_circles():
    graph, circles = import_graph(), []

    def reach(start):  # modules reachable from start
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for module in graph:
        if module in reach(module):
            circles.append(module)
    assert circles == []


def test_function_local_imports_are_read():
    """Imports inside functions count (the earlier circles hid there)."""
    assert "equiprop.train.run" in import_graph()["equiprop.workflows.calibrate"]  # only inside functions


def test_files_and_functions_stay_short():
    """Files under ~400 lines, functions under 80: a longer one is split where its ideas part."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if source.count("\n") > 400:
            long.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []


# -- docs/architecture.md cites only what exists ---------------------------------------------------------------------
def _defines(path: Path, name: str) -> bool:
    """``name`` is defined in ``path``, or imported there (a package's ``__init__`` re-exporting it)."""
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|^from .* import .*\b{name}\b",
                     path.read_text(), re.MULTILINE) is not None


def _module_file(reference: str) -> Path | None:
    """``train/run_dir``, ``normalization``, ``equiprop.shipped`` or ``nn/backbones`` -> its file in the package."""
    parts = reference.removeprefix("equiprop.").replace(".", "/")
    for candidate in (PACKAGE / f"{parts}.py", PACKAGE / parts / "__init__.py"):
        if candidate.exists():
            return candidate
    found = [p for p in PACKAGE.rglob(f"{Path(parts).name}.py") if str(p.with_suffix("")).endswith(parts)]
    return found[0] if len(found) == 1 else None


def _class_file(name: str) -> Path | None:
    found = [p for p in PACKAGE.rglob("*.py") if re.search(rf"^class\s+{name}\b", p.read_text(), re.MULTILINE)]
    return found[0] if len(found) == 1 else None


RECIPE_SECTIONS = ("data", "model", "trainer", "tune", "matbench", "checkpoint")


def test_the_architecture_page_cites_only_files_and_names_that_exist():
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for path in re.findall(r"`([\w/]+\.(?:py|yaml|sh))`", text):
        if not ((PACKAGE / path).exists() or (REPO / path).exists() or (REPO / "src" / path).exists()
                or any(PACKAGE.rglob(path))):
            missing.append(path)
    # `file.py`: `a`, `b`   and   `file.py` (`A`, `B`)
    for path, names in re.findall(r"`([\w/]+)\.py`:? \(?((?:`\w+`(?:, )?)+)", text):
        module = _module_file(path)
        missing += [f"{path}.py: {n}" for n in re.findall(r"`(\w+)`", names) if module is None
                    or not _defines(module, n)]
    # `module.name`, `package.module` and `Class.method` (recipe keys such as `data.storage` are not code)
    for owner, name in re.findall(r"`((?:equiprop\.)?[A-Za-z_][\w/]*)\.([A-Za-z_]\w*)`", text):
        if name in ("py", "yaml", "sh", "md", "json", "ckpt", "txt") or _module_file(f"{owner}.{name}") is not None:
            continue
        if owner in RECIPE_SECTIONS and _module_file(f"{owner}/{name}") is None:
            continue
        module = _module_file(owner) or (_class_file(owner) if owner[:1].isupper() else None)
        if module is None or not _defines(module, name):
            missing.append(f"{owner}.{name}")
    assert missing == []


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped (hyphens and underscores kept),
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_headline_page_links_only_to_sections_and_files_that_exist():
    page = REPO / "docs" / "README.md"
    links = re.findall(r"\]\(([^)#]*)(?:#([^)]+))?\)", page.read_text())
    assert len(links) >= 8
    for target, anchor in links:
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), target
        if anchor:
            anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)}
            assert anchor in anchors, f"{target}#{anchor}"


# Modules whose tests live in a file of another name: a test of a whole path (the predict command runs the checks,
# loading and writing of ``inference``) or of one concept spread over small modules. Each named file must import or
# name the module; a module with neither a mirror ``tests/<package path>/test_<module>.py`` nor an entry here fails.
TESTED_IN = {
    "data/dataset.py": "tests/data/test_graph.py",
    "data/errors.py": "tests/data/test_bad_input.py",
    "data/inputs/failure.py": "tests/data/inputs/test_files.py",
    "data/keys.py": "tests/data/test_graph.py",
    "data/normalization.py": "tests/train/test_tensor_parametrization.py",
    "data/report.py": "tests/data/test_datamodule.py",
    "data/sources/base.py": "tests/data/test_bad_input.py",
    "data/sources/matbench_subset.py": "tests/data/sources/test_perov5.py",
    "data/sources/records_json.py": "tests/data/test_datamodule.py",
    "data/stored_graphs.py": "tests/data/test_graph_store.py",
    "data/symmetry.py": "tests/data/test_tensor_ops.py",
    "inference/checkpoints.py": "tests/workflows/test_predict.py",
    "inference/checks.py": "tests/workflows/test_predict.py",
    "inference/outputs.py": "tests/workflows/test_predict.py",
    "nn/backbones/sevennet_0.py": "tests/nn/backbones/test_sevennet.py",
    "nn/backbones/sevennet_l3i5.py": "tests/nn/backbones/test_sevennet.py",
    "nn/backbones/sevennet_mf0.py": "tests/nn/backbones/test_sevennet.py",
    "nn/base.py": "tests/nn/test_encoder_base.py",
    "nn/foundation_passes.py": "tests/nn/test_inversion_shortcut.py",
    "nn/potential.py": "tests/nn/test_potential_physics.py",
    "nn/registry.py": "tests/nn/test_registry_battery.py",
    "screening/pipeline.py": "tests/screening/test_screen.py",
    "screening/store.py": "tests/screening/test_screen.py",
    "train/checkpoint_io.py": "tests/train/test_run_dir.py",
    "train/cli.py": "tests/train/test_cli_runs.py",
    "train/metrics.py": "tests/train/test_module.py",
    "train/normalizer.py": "tests/train/test_tensor_parametrization.py",
    "train/run.py": "tests/train/test_run_dir.py",
    "train/run_record.py": "tests/train/test_run_ownership.py",
    "workflows/calibrate.py": "tests/inference/test_predictor.py",
    "workflows/scoreboard_inputs.py": "tests/workflows/test_scoreboard.py",
    "workflows/screen.py": "tests/screening/test_screen.py",
}


def _names(module: str, text: str) -> bool:
    """Whether a test file names ``module``: its dotted name (an import or the docstring) or ``from parent import``."""
    parent, _, leaf = module.rpartition(".")
    return module in text or re.search(rf"from {re.escape(parent)} import [^\n]*\b{leaf}\b", text) is not None


def test_the_tests_mirror_the_package():
    tests = REPO / "tests"
    unmirrored, wrong = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or relative.parts[0] in ("bundled",):
            continue
        mirror = tests.joinpath(*relative.parts[:-1], f"test_{path.name}")
        listed = TESTED_IN.get(relative.as_posix())
        if mirror.exists():
            if listed is not None:
                wrong.append(f"{relative}: mirrored by {mirror.relative_to(REPO)}, drop it from TESTED_IN")
            continue
        if listed is None:
            unmirrored.append(str(relative))
        elif not (REPO / listed).exists() or not _names(module_name(path), (REPO / listed).read_text()):
            wrong.append(f"{relative}: {listed} does not name {module_name(path)}")
    stale = [m for m in TESTED_IN if not (PACKAGE / m).exists()]
    assert (unmirrored, wrong, stale) == ([], [], [])
