"""Declarative metadata lives in setup.cfg; this file only ships the Pyserini start-up hook.

``integrations/pyserini/petir_pyserini.pth`` must land at the top of site-packages, which setup.cfg cannot
express, for both regular and editable (``pip install -e``) installs.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK = Path(__file__).parent / "integrations" / "pyserini" / "petir_pyserini.pth"


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


setup(cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook})
