"""The installed package's metadata: project URLs, and the extras the README relies on."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent

#: Seen when the metadata is older than pyproject.toml.
STALE = 'reinstall after editing pyproject.toml: python -m pip install -e ".[dev]"'


def extra_requirements(extra: str) -> set[str]:
    """Names of the distributions an extra adds, as the installed metadata lists them."""
    names = set()
    for line in importlib.metadata.requires("procpool") or []:
        requirement, _, marker = line.partition(";")
        if re.search(rf"""extra\s*==\s*["']{extra}["']""", marker):
            name = re.split(r"[\s\[<>=!~]", requirement.strip(), maxsplit=1)[0]
            names.add(re.sub(r"[-_.]+", "-", name).lower())  # as PEP 503 compares names
    return names


def test_metadata_names_the_project_urls() -> None:
    urls = dict(
        entry.split(", ", 1)
        for entry in importlib.metadata.metadata("procpool").get_all("Project-URL") or []
    )
    assert set(urls) >= {"Homepage", "Source", "Issues"}, STALE
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Issues"].startswith(urls["Source"])


def test_the_dev_extra_brings_tox_and_the_optional_integrations() -> None:
    dev = extra_requirements("dev")
    assert "tox" in dev, STALE
    # What CI installs: the tests of the optional parts run there instead of being skipped.
    assert {"pytest", "ruff", "mypy", "matplotlib", "prometheus-client"} <= dev, STALE
    assert extra_requirements("prometheus") == {"prometheus-client"}, STALE


def test_the_readme_development_section_runs_tox() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Development", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in section.splitlines()]
    assert 'python -m pip install -e ".[dev]"' in commands
    assert "tox" in commands
    tox_ini = (ROOT / "tox.ini").read_text(encoding="utf-8")
    assert "skip_missing_interpreters = true" in tox_ini  # runs with the Pythons at hand
