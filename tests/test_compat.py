"""The download path and the upload widget under the package versions Google Colab preinstalls.

Colab ships gdown 5.2.0 and ipywidgets 7.7.1; the notebook never upgrades them. The same tests
that run under the latest versions (tests/test_data.py, tests/test_widgets.py) are run again in a
subprocess with those versions first on ``sys.path`` (the ``colab_overlay`` fixture), and each
run checks that the old versions really were the ones imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest_with_overlay(overlay: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(overlay), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        REVSEARCH_TEST_EXPECT_GDOWN="5.2.0",
        REVSEARCH_TEST_EXPECT_IPYWIDGETS="7.7.1",
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )


def test_the_overlay_holds_colabs_versions(colab_overlay):
    code = "import gdown, ipywidgets; print(gdown.__version__, ipywidgets.__version__, gdown.__file__)"
    env = dict(os.environ, PYTHONPATH=str(colab_overlay))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    version_gdown, version_widgets, path = out.stdout.split()
    assert (version_gdown, version_widgets) == ("5.2.0", "7.7.1") and path.startswith(str(colab_overlay))


@pytest.mark.slow
def test_download_path_under_gdown_5_2_0(colab_overlay):
    proc = _pytest_with_overlay(colab_overlay, "tests/test_data.py")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_upload_widget_and_notebook_steps_under_ipywidgets_7_7_1(colab_overlay):
    proc = _pytest_with_overlay(colab_overlay, "tests/test_widgets.py")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
