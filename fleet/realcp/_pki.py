"""The control plane's own PKI: one CA, the apiserver's serving certificate, client certificates.

Kubernetes authenticates a client certificate as user = CN, groups = O
(one O per group): the admin is ``O=system:masters``; kube-controller-manager
and kube-scheduler are ``CN=system:kube-controller-manager`` and
``CN=system:kube-scheduler``, whom the apiserver's bootstrap RBAC policy
grants what they need. The service-account key pair signs and verifies the
tokens of service accounts. ECDSA P-256 throughout: generating a key costs
about a millisecond, and Go accepts it everywhere here (the controller-manager
signs CSRs with the CA key too).

Everything is written as PEM files into one directory, keys mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PKI", "SERVING_NAMES", "CertPair", "create_pki"]

VALIDITY = datetime.timedelta(days=365)
"""How long every certificate is valid: a control plane for tests, restarted far more often."""
SERVING_NAMES = (
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
"""The serving certificate's SANs: loopback, and the ``kubernetes`` Service's first IP and names
(``--service-cluster-ip-range=10.96.0.0/16``) for clients that follow the in-cluster address."""


@dataclass(frozen=True)
class CertPair:
    """A certificate and its key, as files and as PEM."""

    cert: Path
    key: Path
    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, secret: bool = False) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _pair(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertPair:
    """``cert`` and ``key`` written as ``<name>.crt`` and ``<name>.key`` (0600)."""
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = _key_pem(key)
    return CertPair(
        _write(directory / f"{name}.crt", cert_pem),
        _write(directory / f"{name}.key", key_pem, secret=True),
        cert_pem,
        key_pem,
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class PKI:
    """A CA in ``directory`` that issues the control plane's certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        self._not_before = now - datetime.timedelta(hours=1)
        self._not_after = now + VALIDITY
        self._ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubemock-fleet-ca")])
        self._ca_name = name
        self._ca_cert = (
            self._builder(name, name, self._ca_key.public_key(), ca=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = _pair(directory, "ca", self._ca_cert, self._ca_key)
        sa_key = _key()
        self.service_account_key = _write(directory / "sa.key", _key_pem(sa_key), secret=True)
        self.service_account_pub = _write(
            directory / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        groups: Sequence[str] = (),
        hosts: Sequence[str] = (),
    ) -> CertPair:
        """A certificate for ``common_name`` in ``groups``; with ``hosts`` also one a server may use."""
        key = _key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if hosts:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            self._builder(subject, self._ca_name, key.public_key(), ca=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return _pair(self.directory, name, cert, key)

    def _builder(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        *,
        ca: bool,
    ) -> x509.CertificateBuilder:
        """What the CA and every certificate it issues have in common: validity, serial,
        basic constraints, and key usage (a CA's also signs certificates and CRLs)."""
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )


def create_pki(directory: Path) -> PKI:
    """A fresh CA and service-account key pair in ``directory``."""
    return PKI(directory)
