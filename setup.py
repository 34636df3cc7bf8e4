"""Map the rooms into the one ``ratingctr`` namespace (everything else is in pyproject.toml).

The folders stay at the top of the repository (``training/ export/ serving/ loadtest/ online/``)
and install as ``ratingctr.training`` … beside the root package ``ratingctr/``.  A room
that is absent from the build context is simply not installed: the gateway image copies
only ``ratingctr/`` and ``serving/``, and the CLI registers only the rooms it finds.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
ROOMS = ("training", "export", "serving", "loadtest", "online")

package_dir = {"ratingctr": "ratingctr"}
packages = ["ratingctr"]
for room in ROOMS:
    if (ROOT / room / "__init__.py").is_file():
        package_dir[f"ratingctr.{room}"] = room
        packages += [f"ratingctr.{room}"] + [f"ratingctr.{room}.{sub}" for sub in find_packages(where=room)]

setup(package_dir=package_dir, packages=packages)
