"""The command line keeps TensorFlow's C++ start-up noise off the terminal, unless --debug."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import write_photos
from revsearch.core.console import is_noise

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit", "absl::InitializeLog")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def test_noise_lines_are_recognised():
    assert is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    assert is_noise("I0000 00:00:1796164998.187292   14912 port.cc:153] oneDNN custom operations are on. ...\n")
    assert is_noise("E0000 00:00:1796165008.588844   14912 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
    assert not is_noise("revsearch: error: image file 'x.jpg' does not exist\n")
    assert not is_noise("indexing:  50%|#####     | 5/10 [00:01<00:01,  4.1img/s]\r")
    assert not is_noise("E0000 00:00:1.0   1 some_other_file.cc:1] a real TensorFlow error\n")


def test_quiet_tensorflow_filters_descriptor_2_and_sets_the_log_level():
    code = textwrap.dedent(
        """
        import os, sys
        from revsearch.core.console import quiet_tensorflow
        with quiet_tensorflow():
            print("level", os.environ["TF_CPP_MIN_LOG_LEVEL"])
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1.5   7 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"bar  10%\\rbar  50%\\r")
            sys.stderr.write("a real warning\\n")
            os.write(2, b"E0000 00:00:2.5   7 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
            os.write(2, b"unfinished line")
        sys.stderr.write("after\\n")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"level 3\n"
    assert out.stderr == b"bar  10%\rbar  50%\ra real warning\nunfinished lineafter\n"
    off = code.replace("quiet_tensorflow()", "quiet_tensorflow(False)").replace('os.environ["TF_CPP_MIN_LOG_LEVEL"]', 'os.environ.get("TF_CPP_MIN_LOG_LEVEL")')
    out = subprocess.run([sys.executable, "-c", off], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout == "level None\n" and "oneDNN" in out.stderr and "cuInit" in out.stderr


@pytest.mark.slow
def test_cli_stderr_has_no_tensorflow_noise_unless_debug(tmp_path):
    write_photos(tmp_path / "photos", 3)
    cmd = [sys.executable, "-m", "revsearch", "index", str(tmp_path / "photos"), str(tmp_path / "vec"),
           "--model", "mobilenet", "--weights", "none"]
    quiet = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "3 vectors" in quiet.stdout
    for needle in NOISE:
        assert needle not in quiet.stderr, quiet.stderr
    assert "indexing" in quiet.stderr  # the progress bar still shows
    fresh = [*cmd[:3], "--debug", *cmd[3:5], str(tmp_path / "vec2"), *cmd[6:]]  # a new index: the model runs
    debug = subprocess.run(fresh, env=_env(), capture_output=True, text=True, timeout=600)
    assert debug.returncode == 0, debug.stderr
    # This TensorFlow may print no start-up noise at all; where it does, --debug must let it through.
    printed = any(n in debug.stderr for n in NOISE)
    if not printed:
        pytest.skip("this TensorFlow printed no start-up noise even with --debug; the quiet run is checked above")
