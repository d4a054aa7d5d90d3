"""Fetching the real tokenizers' sources: pip's failures become a skip reason, a wrong
file a failure. No network: pip is replaced by a stand-in."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from unlearn_audit.realtok import _build
from unlearn_audit.realtok._build import RealTokIntegrityError, RealTokUnavailable, fetch_sources


def _fake_pip(monkeypatch, returncode: int, stderr: str = "", payload: bytes | None = None):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if payload is not None:
            dest = cmd[cmd.index("-d") + 1]
            with open(f"{dest}/{_build._SDIST_FILE}", "wb") as fh:
                fh.write(payload)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)

    monkeypatch.setattr(_build.subprocess, "run", run)
    return calls


def test_unreachable_registry_is_a_skip_reason(tmp_path, monkeypatch):
    err = ("WARNING: Retrying ... NewConnectionError\n"
           "ERROR: Could not find a version that satisfies the requirement "
           "llama-cpp-python==0.3.36 (from versions: none)\n")
    calls = _fake_pip(monkeypatch, 1, err)
    with pytest.raises(RealTokUnavailable, match=r"from versions: none"):
        fetch_sources(tmp_path)
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert ":all:" in cmd and cmd[-1] == "llama-cpp-python==0.3.36"
    assert not (tmp_path / "realtok" / "llama.cpp-0.3.36").exists()


def test_a_different_file_fails_and_leaves_nothing(tmp_path, monkeypatch):
    payload = b"not the pinned sdist"
    _fake_pip(monkeypatch, 0, payload=payload)
    with pytest.raises(RealTokIntegrityError, match=hashlib.sha256(payload).hexdigest()):
        fetch_sources(tmp_path)
    assert not issubclass(RealTokIntegrityError, RealTokUnavailable)  # never skipped
    assert not (tmp_path / "realtok" / "llama.cpp-0.3.36").exists()
