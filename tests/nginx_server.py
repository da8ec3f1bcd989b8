"""A real nginx (Debian's ``nginx`` package) serving deploy/nginx/command-code-gateway.conf, for tests
and benchmarks.

The site file is used as shipped; only what ties it to a host is substituted (:func:`render_site`):
the upstream's port, the listen addresses (loopback, free ports), the certificate paths (a
self-signed certificate from :func:`make_certificate`) and the ACME webroot.  Each substitution
must match exactly as often as expected, so a changed site file fails loudly instead of being
tested half-substituted.  :func:`main_config` wraps it in a main ``nginx.conf`` whose pid, logs and
temporary folders are in a scratch folder, with ``daemon off;`` so the process is ours to stop.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(ROOT, "deploy", "nginx", "command-code-gateway.conf")
GUNICORN_PORT = 11434       # the upstream port the site file names (the gateway's default)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)),
                                         None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def make_certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate for ``localhost``, ``127.0.0.1`` and ``::1``: (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def ssl_context(cert_path: str) -> ssl.SSLContext:
    """A client context that trusts exactly the self-signed certificate."""
    return ssl.create_default_context(cafile=cert_path)


def _sub(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(f"site file: expected {count} x {old!r}, found {found}")
    return text.replace(old, new)


def render_site(upstream_port: int, http_port: int, https_port: int, cert: str, key: str,
                webroot: str, site: str = SITE) -> str:
    """The shipped site file with only ports, listen addresses and paths replaced."""
    with open(site, encoding="utf-8") as f:
        text = f.read()
    v6 = ipv6_loopback()
    text = _sub(text, f"server 127.0.0.1:{GUNICORN_PORT};", f"server 127.0.0.1:{upstream_port};", 1)
    text = _sub(text, "listen 80;", f"listen 127.0.0.1:{http_port};", 1)
    text = _sub(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1)
    # IPv6 on loopback only; where the machine has no IPv6 at all the lines become comments
    text = _sub(text, "listen [::]:80;",
                f"listen [::1]:{http_port};" if v6 else "# (no IPv6 here)", 1)
    text = _sub(text, "listen [::]:443 ssl http2;",
                f"listen [::1]:{https_port} ssl http2;" if v6 else "# (no IPv6 here)", 1)
    text = _sub(text, "/etc/letsencrypt/live/gateway.example.com/fullchain.pem", cert, 1)
    text = _sub(text, "/etc/letsencrypt/live/gateway.example.com/privkey.pem", key, 1)
    text = _sub(text, "root /var/www/letsencrypt;", f"root {webroot};", 1)
    return text


def main_config(folder: str, site_path: str) -> str:
    """A main nginx.conf around ``site_path``: everything nginx writes stays in ``folder``."""
    temp = {name: os.path.join(folder, name) for name in
            ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        os.makedirs(path, exist_ok=True)
    mime = "include /etc/nginx/mime.types;" if os.path.exists("/etc/nginx/mime.types") else ""
    # as root, nginx would run its workers as www-data, which cannot enter a 0700 pytest folder
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 1024; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log {folder}/access.log;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {site_path};
}}
"""


def write_config(folder: str, upstream_port: int, http_port: int, https_port: int) -> str:
    """Certificate, site and main config in ``folder``; returns the main config's path."""
    os.makedirs(folder, exist_ok=True)
    cert, key = make_certificate(folder)
    webroot = os.path.join(folder, "webroot")
    os.makedirs(webroot, exist_ok=True)
    site_path = os.path.join(folder, "site.conf")
    with open(site_path, "w", encoding="utf-8") as f:
        f.write(render_site(upstream_port, http_port, https_port, cert, key, webroot))
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(main_config(folder, site_path))
    return conf


def nginx_command(folder: str, conf: str, *extra: str) -> list[str]:
    # -e: the error log before the config is read (else /var/log/nginx/error.log)
    return [nginx_binary(), "-p", folder, "-c", conf, "-e", os.path.join(folder, "error.log"),
            *extra]


def check_config(folder: str, conf: str) -> subprocess.CompletedProcess:
    """``nginx -t`` on the generated config."""
    return subprocess.run(nginx_command(folder, conf, "-t"), capture_output=True, text=True,
                          timeout=30)


class Nginx:
    """nginx in the foreground in front of 127.0.0.1:``upstream_port``."""

    def __init__(self, folder: str, upstream_port: int):
        self.folder = str(folder)
        self.http_port, self.https_port = free_port(), free_port()
        self.cert = os.path.join(self.folder, "cert.pem")
        self.conf = write_config(self.folder, upstream_port, self.http_port, self.https_port)
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self._out = open(os.path.join(self.folder, "nginx.out"), "wb")
        self.proc = subprocess.Popen(nginx_command(self.folder, self.conf), stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 10.0) -> "Nginx":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.log()}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl_context(self.cert)

    def log(self) -> str:
        out = []
        for name in ("nginx.out", "error.log"):
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    out.append(f.read())
        return "\n".join(out)

    def stop(self) -> None:
        self.proc.terminate()           # SIGTERM: nginx's fast shutdown
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()
