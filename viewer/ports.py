"""Pick the port to serve on: the one asked for, or the next free one after it, so a busy port never stops us."""

from __future__ import annotations

import errno
import socket

from recon.data.errors import ReconError


def port_is_free(host: str, port: int) -> bool:
    """True when a listening socket can be bound to ``host:port`` now; False when something else holds it.

    Any other failure (an address not on this machine, a privileged port) is a user error: trying the next
    port would not help.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ReconError(
            f"cannot resolve host {host!r}; pass --host 127.0.0.1 or an address of this machine"
        ) from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # The option the server sets too, so a port in TIME_WAIT counts as free exactly when the server can use it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise ReconError(
                f"cannot listen on {host}:{port} ({e.strerror}); pass another --host or --port"
            ) from None
    return True


def find_free_port(host: str, start: int, tries: int = 100) -> int:
    """The first port from ``start`` on that ``host`` can bind; a user error when none of ``tries`` ports can."""
    if not 0 < start < 65536:
        raise ReconError(f"port {start} is out of range; pass --port between 1 and 65535")
    for port in range(start, min(start + tries, 65536)):
        if port_is_free(host, port):
            return port
    raise ReconError(f"no free port in {start}..{start + tries - 1} on {host}; pass another --port")


def url_for(host: str, port: int) -> str:
    """The address to open in a browser (a wildcard bind is reached through the loopback address)."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"
