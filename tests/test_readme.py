"""The README's commands work, checked cheaply (no training): every command in its code blocks is
recognised and checked. ``python -m runners.phase ...`` composes with ``--cfg job`` (Hydra prints
the config and runs nothing); another ``python -m <module>`` answers ``--help``; the full-suite
pytest command is CI's (``.ci/run``) and a ``-m`` marker expression names registered markers; a
``pip install`` names extras that pyproject.toml defines."""
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


def code_block_commands(markdown: str) -> list[str]:
    """Shell commands in the code blocks (indented by 4 or fenced ``` without a language other than
    sh/bash/console): lines starting with ``python`` or ``pip``, continuations joined, comments cut."""
    in_fence, fence_is_shell, block = False, False, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            language = line[3:].strip()
            in_fence, fence_is_shell = not in_fence, language in ("", "sh", "bash", "console", "shell")
            continue
        if (in_fence and fence_is_shell) or (not in_fence and line.startswith("    ")):
            block.append(line.strip())
    commands, pending = [], ""
    for line in block:
        pending = f"{pending} {line}".strip() if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if re.match(r"(python|pip)\s", pending):
            commands.append(re.sub(r"\s+#.*$", "", pending))
        pending = ""
    return commands


def ci_pytest_command() -> str:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    return next(line for line in lines if line.startswith("python -m pytest"))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)


def check_pip(words: list[str]) -> str | None:
    extras_defined = set(pyproject()["project"]["optional-dependencies"])
    for word in words:
        named = re.search(r"\[([^\]]*)\]", word)
        if named:
            missing = {extra.strip() for extra in named.group(1).split(",")} - extras_defined
            if missing:
                return f"extras {sorted(missing)} are not in pyproject.toml ({sorted(extras_defined)})"
    return None


def check_pytest(command: str, words: list[str]) -> str | None:
    options = words[3:]
    if "-m" not in options:
        ci = ci_pytest_command()
        return None if command == ci else f"the full suite's command is {ci!r} in .ci/run"
    expression = options[options.index("-m") + 1]
    registered = {marker.split(":")[0].strip() for marker in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    unknown = set(re.findall(r"\w+", expression)) - {"not", "and", "or"} - registered
    return f"markers {sorted(unknown)} are not registered in pyproject.toml" if unknown else None


def check_module(words: list[str], cwd: Path) -> str | None:
    """``python -m runners.phase ...``: composed with ``--cfg job``; any other module: ``--help``."""
    module = words[2]
    argv = [sys.executable, *words[1:], "--cfg", "job"] if module == "runners.phase" else \
        [sys.executable, "-m", module, "--help"]
    result = run(argv, cwd)
    if result.returncode != 0:
        return f"{shlex.join(argv[1:])} exited {result.returncode}: {result.stderr.strip()[-600:]}"
    return None


def command_problem(command: str, cwd: Path) -> str | None:
    """None when the command checks out, else what is wrong with it."""
    words = shlex.split(command)
    if words[0] == "pip" and words[1:2] == ["install"]:
        return check_pip(words[2:])
    if words[:3] == ["python", "-m", "pytest"]:
        return check_pytest(command, words)
    if words[0] == "python" and len(words) > 2 and words[1] == "-m":
        return check_module(words, cwd)
    return "not a command this test knows how to check: teach tests/test_readme.py"


def problems_of(markdown: str, cwd: Path) -> list[str]:
    commands = code_block_commands(markdown)
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda command: (command, command_problem(command, cwd)), commands)
        return [f"{command}\n    {problem}" for command, problem in found if problem]


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_commands_are_found():
    commands = code_block_commands(readme())
    assert "python -m runners.phase c1=scaled xla=off" in commands
    assert ci_pytest_command() in commands
    assert any(command.startswith("pip install") for command in commands)


@pytest.mark.slow  # eight Hydra and --help subprocesses
def test_every_readme_command_works(tmp_path):
    """From an empty folder: the commands must not depend on the checkout as working directory."""
    problems = problems_of(readme(), tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_a_broken_command_turns_it_red(tmp_path):
    """Each kind of check fails on a broken command (only the broken commands are run again)."""
    broken = readme()
    for old, new in (("c1=scaled xla=off\n", "c1=scaledd xla=off\n"),
                     ("[torch,launchers,", "[torch,launcherz,"),
                     ("-n 2 --dist loadfile", "-n 3 --dist loadfile"),
                     ('-m "not slow"', '-m "not slw"')):
        assert old in broken, old
        broken = broken.replace(old, new, 1)
    broken += "\n    python -m runners.no_such_module\n\n    python plans/some_script.py\n"
    changed = set(code_block_commands(broken)) - set(code_block_commands(readme()))
    problems = problems_of("".join(f"    {command}\n\n" for command in sorted(changed)), tmp_path)
    expected = ("runners.phase c1=scaledd", "launcherz", ".ci/run", "slw", "runners.no_such_module",
                "teach tests/test_readme.py")
    assert len(problems) == len(expected), "\n".join(problems)
    for fragment in expected:
        assert sum(fragment in problem for problem in problems) == 1, (fragment, problems)
