"""nginx (Debian's /usr/sbin/nginx) as the load balancer in front of server replicas.

Everything it writes (pid, logs, temp files) stays in a temporary directory; it listens
on loopback only and runs in the foreground as a child of the test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from _services.postgres import free_port

_CONFIG = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {root}/access.log upstream;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{site}
}}
"""
# The upstream and server blocks are docs/replicas.md's, as a reader would copy them.
_DOC = Path(__file__).resolve().parents[2] / "docs" / "replicas.md"


def documented_site(upstreams: Sequence[str], port: int) -> str:
    """docs/replicas.md's nginx block with these replicas and this loopback port."""
    text = _DOC.read_text()
    block = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    servers = re.findall(r"^( +)server \S+:8470( .*);$", block, flags=re.MULTILINE)
    if not servers or "listen 8470;" not in block:
        raise RuntimeError(f"{_DOC}: its nginx block no longer has the lines the tests fill in")
    indent, options = servers[0]
    lines = "\n".join(f"{indent}server {address}{options};" for address in upstreams)
    block = re.sub(r"(^ +server \S+:8470 .*;\n)+", lines + "\n", block, flags=re.MULTILINE)
    return block.replace("listen 8470;", f"listen 127.0.0.1:{port};")


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise RuntimeError("nginx is not installed: apt-get install nginx-light (Debian)")
    return found


@contextmanager
def nginx(upstreams: Sequence[str], root: Path) -> Iterator[str]:
    """Yield the URL of an nginx balancing round-robin over ``upstreams`` (host:port)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = documented_site(upstreams, port)
    # As root the master would hand its workers to `nobody`, who cannot write here.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(_CONFIG.format(user=user, root=root, site=site))
    argv = [_nginx(), "-e", str(root / "error.log"), "-p", str(root), "-c", str(conf)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused its configuration:\n{checked.stderr}")
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc, root)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def upstreams_used(root: Path, method: str) -> list[str]:
    """The replica address of each proxied ``method`` request, in order (the access log)."""
    log = root / "access.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split()[-1] for line in lines if line.startswith(f"{method} ")]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (root / "error.log").read_text() if (root / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{text}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within 20 s")
