"""`make test` runs scripts/ensure_system_deps.sh: it must never prompt for a sudo password, and must say what it
skipped and why. Run against fake `id`, `sudo` and `apt-get` on a PATH that holds nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.data import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "ensure_system_deps.sh"
BASH = shutil.which("bash")


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, *, uid: int, sudo: str | None, apt: bool = True) -> tuple[str, str]:
    """`sudo`: None (not installed), "password" (needs one), "passwordless"."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    _tool(bin_dir, "id", f'[ "$1" = -u ] && echo {uid}')
    if apt:
        _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    if sudo == "password":  # what real sudo does: -n fails at once; anything else would prompt
        _tool(bin_dir, "sudo", f'echo "sudo $*" >> {calls}; [ "$1" = -n ] && exit 1; echo PROMPTED >> {calls}; exit 1')
    elif sudo == "passwordless":
        _tool(bin_dir, "sudo", f'echo "sudo $*" >> {calls}; [ "$1" = -n ] || echo PROMPTED >> {calls}; shift; "$@"')
    done = subprocess.run(
        [BASH, str(SCRIPT)],
        env={"PATH": str(bin_dir), "CS_DEBIAN_FASHION_MNIST": str(tmp_path / "no-dataset"), "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=True,
    )
    return done.stdout, calls.read_text() if calls.exists() else ""


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_without_root_or_passwordless_sudo_nothing_is_installed_and_it_says_why(tmp_path):
    out, calls = _run(tmp_path, uid=1000, sudo="password")
    assert "PROMPTED" not in calls and "apt-get" not in calls
    assert calls.strip() == "sudo -n true"
    assert "skipped installing chromium dataset-fashion-mnist: not root and sudo would ask for a password" in out
    assert "sudo apt-get install chromium dataset-fashion-mnist" in out  # what to run by hand


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_passwordless_sudo_and_root_install_without_prompting(tmp_path):
    (tmp_path / "sudo").mkdir()
    (tmp_path / "root").mkdir()
    out, calls = _run(tmp_path / "sudo", uid=1000, sudo="passwordless")
    assert "PROMPTED" not in calls
    assert "sudo -n apt-get install -y -q chromium dataset-fashion-mnist" in calls
    assert "installing chromium dataset-fashion-mnist with sudo -n apt-get" in out

    out, calls = _run(tmp_path / "root", uid=0, sudo="password")
    assert calls.splitlines() == ["apt-get install -y -q chromium dataset-fashion-mnist"]


@pytest.mark.skipif(BASH is None, reason="bash not found")
def test_no_apt_get_says_so(tmp_path):
    out, calls = _run(tmp_path, uid=0, sudo=None, apt=False)
    assert calls == ""
    assert "skipped installing chromium dataset-fashion-mnist: apt-get not found" in out
