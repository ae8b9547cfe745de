"""A throwaway certificate authority and server certificate for loopback TLS stand-ins, and a
threaded HTTPS server that does each handshake on its connection's own thread."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from standins.http import QuietServer


@dataclass(frozen=True)
class LoopbackTLS:
    """``ca_file`` is what a client trusts (DEVOPS_CA_BUNDLE); the rest serves TLS."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class ThreadingTLSServer(QuietServer):
    """A threaded HTTPS server; each TLS handshake runs on the connection's own thread.

    Wrapping the listening socket instead would run every handshake inside ``accept()``, one at
    a time, so a client's second connection would wait for its first one's handshake: a real
    service shakes hands with concurrent connections concurrently.
    """

    daemon_threads = True
    request_queue_size = 1024  # a deep accept backlog, as a real service has (bursts of 500 clients)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: LoopbackTLS) -> None:
        self.context = tls.server_context()
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # a client that gave up or spoke plain HTTP, as accept() saw before
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            connection.close()

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket) and request.fileno() == -1:  # handed over to the TLS socket
            return
        super().shutdown_request(request)


class TLSStandIn:
    """The lifecycle every loopback TLS stand-in shares.

    ``start()`` serves ``handler_class()`` (with its ``owner`` set to this stand-in) on a free
    loopback port, on a daemon thread; ``stop()`` ends it (nothing when it never started).
    Subclasses call ``_init_tls(workdir)`` from ``__post_init__``.
    """

    thread_name = "tls-standin"
    tls: LoopbackTLS
    _server: ThreadingTLSServer | None

    def _init_tls(self, workdir: Path) -> None:
        self.tls = make_loopback_tls(workdir / "tls")
        self._server = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        handler = type("Handler", (self.handler_class(),), {"owner": self})
        self._server = ThreadingTLSServer(("127.0.0.1", 0), handler, self.tls)
        threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the stand-in first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_loopback_tls(directory: Path) -> LoopbackTLS:
    """Create a CA and a certificate for localhost/127.0.0.1 signed by it, in ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("relay test CA"))
        .issuer_name(_name("relay test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    tls = LoopbackTLS(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    tls.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls
