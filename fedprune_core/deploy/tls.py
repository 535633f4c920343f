"""The keys of a secure deployment on this machine: a certificate authority, the SuperLink's
certificate for 127.0.0.1, and one authentication key pair per SuperNode (`deploy --tls`).

Flower encrypts SuperLink connections with TLS (the SuperLink's --ssl-* files, the clients'
root certificate) and, with `--enable-supernode-auth`, admits only the SuperNodes whose public
keys `flwr supernode register` added: each signs its requests with its EC private key
(OpenSSH format, a NIST curve). Everything is written to one folder, private keys readable by
this user only. The `cryptography` package comes with Flower.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAYS = 30  # a local deployment's certificates: long enough for any run, short-lived


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_authority(folder: Path) -> tuple[Path, Path]:
    """(ca.crt, ca.key): a self-signed CA."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("FedPrune-Sparse local CA"))
            .issuer_name(_name("FedPrune-Sparse local CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA384()))
    return (_write(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(folder / "ca.key", _pem_key(key), private=True))


def server_certificate(folder: Path, ca_cert: Path, ca_key: Path,
                       host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(server.pem, server.key): the SuperLink's certificate for `host` (and localhost), signed
    by the CA."""
    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
    cert = (x509.CertificateBuilder().subject_name(_name(host))
            .issuer_name(authority.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(signer, hashes.SHA384()))
    return (_write(folder / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
            _write(folder / "server.key", _pem_key(key), private=True))


def node_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """(<name>.key, <name>.pub): a SuperNode's authentication key pair, OpenSSH format."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return (_write(folder / f"{name}.key", private, private=True),
            _write(folder / f"{name}.pub", public + b"\n"))


def local_keys(folder: Path, nodes: int) -> dict:
    """Every file a secure local deployment of `nodes` SuperNodes needs, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_cert, ca_key = certificate_authority(folder)
    cert, key = server_certificate(folder, ca_cert, ca_key)
    return {"ca": ca_cert, "cert": cert, "key": key,
            "nodes": [node_keys(folder, f"node-{i}") for i in range(nodes)]}
