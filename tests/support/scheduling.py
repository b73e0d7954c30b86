"""`--dist loadfile` (make test) with the files that share a costly session fixture as one unit: each
xdist worker builds its own session fixtures, so files that share one run on one worker and build it once."""

from collections import defaultdict
from pathlib import Path

import pytest
from xdist.scheduler import LoadFileScheduling

# Each a real `dvc repro` of a fresh project (support/projects.py): file name -> the fixture's name as its unit.
TOGETHER = {
    "test_pipeline.py": "project",
    "test_ui.py": "project",
    "test_change_report.py": "two_commits",
    "test_offline_plots.py": "two_commits",
}
UNITS = set(TOGETHER.values())


class SharedFixtureFiles(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
        file = super()._split_scope(nodeid)
        return TOGETHER.get(Path(file).name, file)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadFileScheduling | None:
    return SharedFixtureFiles(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.hookimpl(tryfirst=True)  # before -m and -k deselect: every file that uses one is seen
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A file that uses one of the shared fixtures but is not in its unit stops the run at collection."""
    units: defaultdict[str, set[str]] = defaultdict(set)
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        for name in UNITS:
            found = defs.name2fixturedefs.get(name) if defs else None
            if found and found[-1].scope == "session":
                units[name].add(TOGETHER.get(item.path.name, item.path.name))
    wrong = {name: sorted(files) for name, files in units.items() if files != {name}}
    if wrong:
        raise pytest.UsageError(f"support/scheduling.py: TOGETHER misses users of {wrong}")
