"""Declarative metadata lives in setup.cfg; this file finds the packages and ships the Pyserini start-up hook.

Packages are found, never listed: a listed set left ``petir.tasks`` out of every wheel while ``pip install -e .``
hid it (tests/test_packaging.py builds and installs the wheel). They live under two roots (``petir`` here, the
plug-in under ``integrations/pyserini``), which setup.cfg's ``packages = find:`` cannot express.
``integrations/pyserini/petir_pyserini.pth`` must land at the top of site-packages, which setup.cfg cannot
express either, for both regular and editable (``pip install -e``) installs.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).parent
PLUGIN_ROOT = Path("integrations") / "pyserini"  # relative: setuptools refuses absolute package_dir paths
HOOK = ROOT / PLUGIN_ROOT / "petir_pyserini.pth"
PACKAGES = [*find_packages(include=["petir", "petir.*"]), *find_packages(str(PLUGIN_ROOT), include=["petir_pyserini*"])]


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        self.copy_file(str(HOOK), str(Path(self.build_lib) / HOOK.name))

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / HOOK.name)]


class EditableWheelWithHook(editable_wheel):
    # The editable wheel is assembled from this directory; adding the hook here puts it beside setuptools' own
    # editable .pth file.
    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        self.copy_file(str(HOOK), str(Path(installation_dir) / HOOK.name))


setup(packages=PACKAGES, cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook})
