"""gRPC credentials from TLS files (see config.tls_from_env)."""

from __future__ import annotations

from pathlib import Path

import grpc

from boutique.runtime.config import TLSFiles


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(tls: TLSFiles) -> grpc.ServerCredentials:
    """TLS for the server; with a CA, clients must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(_read(tls.key), _read(tls.cert))],
        root_certificates=_read(tls.ca) if tls.ca else None,
        require_client_auth=tls.mutual,
    )


def channel_credentials(tls: TLSFiles) -> grpc.ChannelCredentials:
    """Verify the server against the CA and present our own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca) if tls.ca else None,
        private_key=_read(tls.key),
        certificate_chain=_read(tls.cert),
    )
