"""Hydra plugins that DVC loads from conf/ (its `hydra.plugins_path`) before `dvc exp run` writes
params.yaml: a hand edit of params.yaml is refused rather than overwritten, and the recipes of
conf/experiment/ are served by name, each checked, an unknown one refused in one line."""

import sys
from pathlib import Path

from dvc.exceptions import DvcException
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
# This project's own code, as its stages run it (PYTHONPATH=src), not the package another checkout installed.
sys.path.insert(0, str(ROOT / "src"))
try:
    from mnist_pipeline import recipes
    from mnist_pipeline.errors import ParamsError
finally:
    sys.path.remove(str(ROOT / "src"))


class Recipes(ConfigSource):
    """The config group `experiment`: conf/experiment/NAME.yaml, checked, its keys at the top level."""

    @staticmethod
    def scheme() -> str:
        return "mnist-recipes"

    def load_config(self, config_path: str) -> ConfigResult:
        name = config_path.partition("/")[2].removesuffix(".yaml")
        try:
            values = recipes.recipe(ROOT, name)
        except ParamsError as exc:
            raise DvcException(str(exc)) from None  # DVC prints it as one line, `ERROR: ...`
        return ConfigResult(self.provider, self.full_path(), OmegaConf.create(values), {"package": "_global_"})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path == recipes.GROUP

    def is_config(self, config_path: str) -> bool:
        # Any name, so that load_config refuses an unknown one in one line where Hydra would print ten;
        # but the group's default, null, which Hydra looks up as the name "None" and skips when absent.
        group, _, name = config_path.partition("/")
        return group == recipes.GROUP and (name != "None" or name in recipes.names(ROOT))

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        wanted = config_path == recipes.GROUP and results_filter in (None, ObjectType.CONFIG)
        return recipes.names(ROOT) if wanted else []


class RefuseUnsavedParams(SearchPathPlugin):
    """Runs as DVC sets Hydra up, before every composition: checks params.yaml, then puts the recipes first."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            recipes.check_unsaved(ROOT)
        except ParamsError as exc:
            raise DvcException(str(exc)) from None
        search_path.prepend("mnist-recipes", f"{Recipes.scheme()}://{ROOT / 'conf'}")
