"""Issue 26, item 4: which page an experiment's address opens on, and what decides it (no browser).

In the installed MLflow (3.18 when written), the experiment page (`#/experiments/<id>`) redirects
to the runs table or to the GenAI overview/traces by the UI's *workflow type*: the address's
``workflowType`` parameter, else the browser's stored GenAI / Model training switch
(``mlflow.workflowType`` in localStorage, GenAI by default). The experiment tag
``mlflow.experimentKind`` no longer enters that choice (MLflow PR 20161 removed the per-experiment
type selector): no experiment tag or server setting can make the bare address open the runs.
These tests read that rule from the installed UI bundle, so an MLflow upgrade that changes it fails
here (and docs/operations.md's "The MLflow UI" is to be checked again), and check that every address the
runner prints carries ``workflowType=machine_learning``. Screenshots of both addresses in headless
Chromium: plans/active/FIX-PYTORCH-FORWARD-PARITY-001/findings/2026-12-07_disk_full_and_mlflow_ui.md.
"""
import re
from pathlib import Path

import pytest

from runners import tracking


def _ui_bundle() -> str:
    import mlflow

    folder = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    files = sorted(folder.glob("*.js"))
    if not files:
        pytest.skip(f"no MLflow UI bundle under {folder}")
    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in files)


@pytest.fixture(scope="module")
def bundle() -> str:
    return _ui_bundle()


def test_the_workflow_type_comes_from_the_address_else_the_browser_genai_by_default(bundle):
    # the address's parameter wins when it names a workflow type ...
    assert re.search(r'\.get\("workflowType"\);return (\w)===(\w)\.GENAI\|\|\1===\2\.MACHINE_LEARNING\?\1:\w', bundle)
    # ... else the browser's stored switch, whose first value is GENAI
    stored = re.search(r'key:"mlflow\.workflowType",version:\d+,initialValue:([\w$]+)', bundle)
    assert stored and re.search(rf'\b{re.escape(stored.group(1))}=\w\.GENAI\b', bundle)
    assert re.search(r'e\.GENAI="genai",e\.MACHINE_LEARNING="machine_learning"', bundle)
    assert tracking.WORKFLOW_TYPE == "machine_learning"


def test_the_experiment_kind_follows_the_workflow_type_not_the_experiment_tag(bundle):
    """The kind hook reads the tag only when a feature flag is off; that flag is a constant true."""
    hook = re.search(r'\{workflowType:(\w)\}=\(0,\w\.\w+\)\(\),(\w)=\(0,(\w)\.(\w+)\)\(\);return\(0,\w\.useMemo\)'
                     r'\(\(\)=>\2\?\w\(\1\):\(e=>\{[^}]*"mlflow\.experimentKind"', bundle)
    assert hook, "the experiment-kind hook changed: check which page #/experiments/<id> opens on"
    module_var, export = hook.group(3), hook.group(4)
    imports = re.findall(rf'\b{module_var}=n\((\d+)\)', bundle[max(0, hook.start() - 3000):hook.start()])
    assert imports, "the flag's module was not found"
    flags = [re.search(rf'\b{export}:\(\)=>(\w+)\b', module) for module in _modules(bundle, imports[-1])]
    (flag, module), = [(found, module) for found, module in zip(flags, _modules(bundle, imports[-1])) if found]
    assert re.search(rf'[,;]{flag.group(1)}=\(\)=>!0[,;}}]', module), "the flag is no longer constant"


def _modules(bundle: str, number: str) -> list[str]:
    """The texts of webpack module ``number`` (``},<number>(e,t,n){`` up to the next module) in the
    bundle's files (a chunk may carry a smaller copy)."""
    found, following = [], re.compile(r"\},\d+\(e,t,n\)\{")
    for start in (match.start() for match in re.finditer(re.escape(f"}},{number}(e,t,n){{"), bundle)):
        end = following.search(bundle, start + 2)
        found.append(bundle[start:end.start() if end else len(bundle)])
    return found


def test_the_experiment_page_opens_the_runs_unless_the_kind_is_genai(bundle):
    assert re.search(r'let (\w)=(\w)\.fM\.Runs;(\w)===\2\.Gk\.GENAI_DEVELOPMENT&&\(\1=', bundle)


def test_every_address_the_runner_prints_names_the_model_training_workflow(tmp_path):
    base = "http://127.0.0.1:5000"
    assert tracking.experiment_url(base, "7") == f"{base}/#/experiments/7?workflowType=machine_learning"
    assert tracking.runs_view_url(base, "7").endswith("&workflowType=machine_learning")
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "E", 30)
    tracker.start("slot", {"status": "RUNNING"})
    assert "workflowType=machine_learning" in tracker.runs_link()
    # kept for MLflow 3 releases before the switch, where the tag chose the page
    assert tracker.client.get_experiment(tracker.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == \
        tracking.EXPERIMENT_KIND
    tracker.end(True)
