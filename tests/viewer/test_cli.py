"""`recon view` on the command line: user errors, the busy-port fallback, the printed URL, the bind address."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from recon.cli import main
from tests.helpers import default_sigint
from tests.paths import REPO
from tests.viewer.conftest import wait_for


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nope", None, "does not exist"),
        ("bad.ply", b"ply\nformat nonsense\n", "not a readable PLY"),
        ("notes.txt", b"x", "cannot show"),
    ],
)
def test_missing_or_unreadable_target_is_one_line_and_exit_2(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out, err = _run(["view", str(path)], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("recon: error:"), err
    assert out == ""


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_view_serves_on_the_next_free_port_on_localhost(viewer_run, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "stdout.txt"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(out, "w") as outf:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-X",
                    "faulthandler",
                    "-m",
                    "recon.cli",
                    "view",
                    str(viewer_run),
                    "--port",
                    str(port),
                ],
                cwd=REPO,
                stdout=outf,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=default_sigint,  # the test stops it with Ctrl-C
            )
        try:
            m = wait_for(
                lambda: (
                    re.search(r"open (http://127\.0\.0\.1:(\d+)) \(port (\d+) was busy\)", out.read_text())
                    or proc.poll() is not None
                ),
                timeout=60,
                what="the URL",
            )
            assert m is not True, proc.stderr.read()
            url, served = m.group(1), int(m.group(2))
            assert served > port and int(m.group(3)) == port
            page = urllib.request.urlopen(url, timeout=10).read().decode()
            assert "<html" in page.lower()
            if Path("/proc/net/tcp").exists():
                assert _listening_addresses(served) == {"127.0.0.1"}
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)  # -X faulthandler: every thread's stack to stderr
                pytest.fail(
                    f"recon view ignored Ctrl-C for 30 s; its threads:\n{proc.communicate(timeout=30)[1]}"
                )
    assert code == 0, proc.stderr.read()
