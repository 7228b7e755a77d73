"""Certificates for the federation interop tests, made with the `openssl` command.

Two setups, as issue 6 asks:

- `self_signed(dir, domain)`: a certificate that names the domain but chains to nothing a peer
  trusts, so servers fall back to XEP-0220 dialback;
- `TestCA(dir)`: a throw-away CA both servers trust; `issue(domain)` gives a leaf for the domain
  whose only extended key usage is serverAuth, which is what public CAs issue since Let's Encrypt
  dropped clientAuth (2026), so a server must accept it on the TLS client side of s2s too. With
  it, servers authenticate each other with SASL EXTERNAL.

Every certificate names `domain` and `*.domain` (a component such as `conference.domain` sends
under the same certificate), on a P-256 key, valid for a day.
"""

from __future__ import annotations

import pathlib
import subprocess

DAYS = "1"


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")


def _names(domain: str) -> str:
    return f"subjectAltName=DNS:{domain},DNS:*.{domain}"


class CertPair:
    """A certificate chain file (leaf first) and its key, as PEM paths; `ca` is the file a peer
    should trust to verify it (the CA, or the certificate itself when self-signed)."""

    def __init__(self, cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path):
        self.cert, self.key, self.ca = cert, key, ca

    def __repr__(self) -> str:
        return f"CertPair(cert={self.cert}, key={self.key}, ca={self.ca})"


def self_signed(directory: pathlib.Path, domain: str) -> CertPair:
    """A self-signed certificate for `domain`: valid names, no trusted issuer."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", DAYS, "-subj", f"/CN={domain}",
        "-addext", _names(domain),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "extendedKeyUsage=serverAuth",
        cwd=directory,
    )
    return CertPair(cert, key, cert)


class TestCA:
    """A certificate authority for one test; `issue` signs leaves for domains."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: pathlib.Path, name: str = "Franca interop test CA"):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self.dir / "ca.crt", self.dir / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(self.key), "-out", str(self.cert), "-days", DAYS, "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.dir,
        )
        self.serial = 1

    def issue(self, domain: str, *, names: str | None = None) -> CertPair:
        """A leaf for `domain` (or for the SAN text `names`, e.g. to make a wrong-name
        certificate), serverAuth only; the chain file holds the leaf and then the CA."""
        leaf, key, csr = self.dir / f"{domain}.leaf.crt", self.dir / f"{domain}.key", self.dir / f"{domain}.csr"
        ext = self.dir / f"{domain}.ext"
        ext.write_text(
            (names and f"subjectAltName={names}" or _names(domain)) + "\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={domain}",
            cwd=self.dir,
        )
        self.serial += 1
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(self.serial), "-days", DAYS, "-sha256", "-extfile", str(ext),
            "-out", str(leaf),
            cwd=self.dir,
        )
        chain = self.dir / f"{domain}.crt"
        chain.write_text(leaf.read_text() + self.cert.read_text())
        return CertPair(chain, key, self.cert)
