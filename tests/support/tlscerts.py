"""A throwaway CA and certificates for TLS tests, made with the ``openssl`` command.

Keys are ECDSA P-256 (fast also under TCG emulation). Certificates carry no extended key
usage, so each serves as a server and as a client certificate (a replica server is both: it
serves, and it connects to its source when it pulls). Every certificate names 127.0.0.1 and
``localhost`` unless told otherwise.

Example::

    ca = TestCA(tmp_path / "pki")
    server = ca.issue("replica0")  # Issued(cert=..., key=...)
    other = TestCA(tmp_path / "other").issue("stranger")  # not trusted by ``ca``
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "iscsikit test CA") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "ca.key"
        self.cert = directory / "ca.pem"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.key))
        _openssl("req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert), "-days", "2",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip

    def issue(self, name: str, san: str = "IP:127.0.0.1,DNS:localhost") -> Issued:
        key, csr, cert = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.pem"
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
        key.chmod(0o600)
        return Issued(cert, key)
