"""Packaging glue that pyproject.toml cannot express: the presets in the top-level configs/ folder
(the one copy users read and edit) are installed as the package ``chestxr.presets``, so a wheel or
sdist install can list and load them (``chestxr presets``). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["chestxr", "chestxr.*"]), "chestxr.presets"],
    package_dir={"chestxr.presets": "configs"},
)
