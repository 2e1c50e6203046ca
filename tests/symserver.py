"""A loopback symbol server for tests: Python's http.server in a thread on 127.0.0.1 serving a
symbol-store directory, optionally over HTTPS with a certificate made on the spot, with faults
injected per path (status codes, slowness, truncated bodies, redirects).

Nothing here is ntdump code: the store is laid out by :func:`build_store` from the shared test
data in symstore's layout, with keys computed by pefile (an outside reader), not by ntdump.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import shutil
import ssl
import threading
import time
from pathlib import Path
from typing import Any

AMDPPM_TS = 0xC9C03000
AMDPPM_SIZE = 0x3B000


def pefile_keys(sys_path: Path) -> tuple[str, str, str]:
    """(image key, pdb name, pdb key) of a PE file, read by pefile."""
    import pefile

    pe = pefile.PE(str(sys_path), fast_load=False)
    ikey = f"{pe.FILE_HEADER.TimeDateStamp:08X}{pe.OPTIONAL_HEADER.SizeOfImage:x}"
    for d in pe.DIRECTORY_ENTRY_DEBUG:
        e = d.entry
        if d.struct.Type == 2 and getattr(e, "CvSignature", b"") == b"RSDS":
            guid = (f"{e.Signature_Data1:08X}{e.Signature_Data2:04X}{e.Signature_Data3:04X}"
                    + bytes([e.Signature_Data4, e.Signature_Data5, *e.Signature_Data6]).hex()
                    .upper())
            name = e.PdbFileName.rstrip(b"\0").decode().replace("\\", "/").rsplit("/", 1)[-1]
            return ikey, name, f"{guid}{e.Age:X}"
    raise AssertionError("no RSDS record")


def build_store(data: Path, root: Path) -> dict[str, Any]:
    """A symbol store of amdppm.sys, amdppm.pdb and user32.pdb under ``root``; returns the keys."""
    sys_path = data / "pe" / "msft" / "amdppm.sys"
    ikey, pdb_name, pkey = pefile_keys(sys_path)
    (root / "amdppm.sys" / ikey).mkdir(parents=True)
    shutil.copy(sys_path, root / "amdppm.sys" / ikey / "amdppm.sys")
    (root / pdb_name / pkey).mkdir(parents=True)
    shutil.copy(data / "pdb" / "msft" / "amdppm.pdb", root / pdb_name / pkey / pdb_name)
    return {"image_key": ikey, "pdb_name": pdb_name, "pdb_key": pkey}


class SymServer:
    """``with SymServer(root) as s: s.url`` — faults: ``s.faults[path] = (kind, arg)`` with kind
    ``"status"`` (code), ``"status_then_ok"`` (code, times), ``"slow"`` (seconds),
    ``"truncate"`` (bytes sent of the body), ``"redirect"`` (absolute URL)."""

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.tls = tls
        self.faults: dict[str, tuple[str, Any]] = {}
        self.requests: list[str] = []
        self.proxied: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path.startswith("http://"):  # a proxy request: absolute URL
                    outer.proxied.append(path)
                    path = "/" + path.split("/", 3)[3]
                with outer._lock:
                    outer.requests.append(path)
                    fault = outer.faults.get(path)
                    if fault and fault[0] == "status_then_ok":
                        code, times = fault[1]
                        if times <= 0:
                            fault = None
                        else:
                            outer.faults[path] = ("status_then_ok", (code, times - 1))
                            fault = ("status", code)
                if fault and fault[0] == "status":
                    return self._send(fault[1], b"")
                if fault and fault[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", fault[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                f = (outer.root / path.lstrip("/")).resolve()
                if outer.root.resolve() not in f.parents or not f.is_file():
                    return self._send(404, b"not found")
                body = f.read_bytes()
                if fault and fault[0] == "slow":
                    time.sleep(fault[1])
                if fault and fault[0] == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: fault[1]])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                return self._send(200, body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SymServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_cert(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography): (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ntdump test symbol server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    c, k = where / "cert.pem", where / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k
