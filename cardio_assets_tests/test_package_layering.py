"""The science packages stand without Dagster: only defs/, definitions.py and run.py import it."""

import subprocess
import sys

import pytest

SCIENCE = [
    "cardio_assets.cohort", "cardio_assets.frames", "cardio_assets.lake", "cardio_assets.phantom", "cardio_assets.generation",
    "cardio_assets.classify", "cardio_assets.metrics", "cardio_assets.compute", "cardio_assets.profiles",
]

# Run in a fresh interpreter, where nothing else has loaded dagster: import the package and every
# module below it, and exit naming the first module after which dagster is loaded.
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [package.__name__]
if hasattr(package, "__path__"):
    names += [module.name for module in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
    if "dagster" in sys.modules:
        sys.exit(f"importing {name} loads dagster")
"""


@pytest.mark.parametrize("package", SCIENCE)
def test_science_package_imports_without_dagster(package):
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE, package], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
