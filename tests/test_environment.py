"""The set-up that `make test` performs really happened: the reference engine is runnable."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.mark.psi4
def test_psi4_executable_runs(tmp_path):
    exe = shutil.which("psi4")
    assert exe is not None, "psi4 is not on PATH: scripts/bootstrap.sh installs Debian's psi4"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip().split(".")[0].isdigit()
