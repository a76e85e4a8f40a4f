"""README.md starts with the two set-up commands, and CI runs exactly the second one."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_the_first_two_commands_are_the_demo_and_the_tests():
    demo, tests = bash_blocks((ROOT / "README.md").read_text())[:2]
    assert demo == ('python3 -m venv .venv && .venv/bin/pip install ".[demo]" && '
                    ".venv/bin/tricks-train --recipe resnet50d_all --demo")
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install") and "pytest" in tests
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"demo", "test"} <= set(extras) and "mlxtend>=0.23" in extras["demo"]


def test_ci_runs_the_readme_test_command():
    tests = bash_blocks((ROOT / "README.md").read_text())[1]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert tests in ci, f"README's test command is not in .ci/run: {tests}"
