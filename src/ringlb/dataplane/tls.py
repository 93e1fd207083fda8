"""TLS for the data plane: the HTTPS listener's certificates, and the context for replicas
that speak HTTPS.

`Certificates` holds one server context per certificate and picks one per handshake by the
name the client asked for (SNI): an exact name first, then a wildcard (`*.example.com`),
then the first certificate. The listening socket keeps one outer context whose only job is
to run that choice, so `reload` (SIGHUP, or the files changing) can swap the inner contexts
without touching the socket: new handshakes get the new files, open connections keep the
session they have.

Defaults follow Python's `ssl.create_default_context` (no SSLv3, TLS 1.0/1.1, RC4, 3DES or
anonymous suites; forward secrecy first), with TLS 1.2 as the least version and ALPN
offering `http/1.1` only (the data plane speaks HTTP/1.1).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ringlb.proxy")

ALPN = ["http/1.1"]
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# In a certificate directory: certificate files, each with the key of the same stem.
CERT_SUFFIXES = (".crt", ".pem", ".cert")
KEY_SUFFIX = ".key"


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message names the option and file."""


@dataclass(frozen=True, slots=True)
class CertPair:
    """A PEM certificate chain and its key (`key` None: the key is in the same file)."""

    cert: Path
    key: Path | None


def find_pairs(certs: Sequence[Path], keys: Sequence[Path]) -> list[CertPair]:
    """Returns the pairs named by the settings: certificate files paired with keys by
    position (a missing key: it is in the certificate's file), or one directory whose
    `NAME.crt` / `NAME.pem` files each go with `NAME.key`. Raises CertificateError."""
    if len(certs) == 1 and certs[0].is_dir():
        directory = certs[0]
        if keys:
            raise CertificateError(
                "tls_key (RINGLB_TLS_KEY, --tls-key): not used when tls_cert is a directory "
                f"({str(directory)!r}): each NAME.crt goes with NAME.key"
            )
        pairs = [
            CertPair(path, path.with_suffix(KEY_SUFFIX))
            for path in sorted(directory.iterdir())
            if path.suffix in CERT_SUFFIXES and path.with_suffix(KEY_SUFFIX).is_file()
        ]
        if not pairs:
            raise CertificateError(
                f"tls_cert (RINGLB_TLS_CERT, --tls-cert): no NAME.crt with NAME.key in "
                f"{str(directory)!r}"
            )
        return pairs
    if len(keys) > len(certs):
        raise CertificateError(
            f"tls_key (RINGLB_TLS_KEY, --tls-key): {len(keys)} key(s) for {len(certs)} "
            "certificate(s)"
        )
    return [CertPair(cert, keys[i] if i < len(keys) else None) for i, cert in enumerate(certs)]


def server_context(pair: CertPair, min_version: str) -> ssl.SSLContext:
    """Returns a server context serving `pair`. Raises CertificateError naming the option
    and the file that is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_VERSIONS[min_version]
    context.set_alpn_protocols(ALPN)
    for option, path in (("tls_cert", pair.cert), ("tls_key", pair.key)):
        if path is not None and not path.is_file():
            raise CertificateError(f"{_option(option)}: no such file {str(path)!r}")
    try:
        context.load_cert_chain(pair.cert, pair.key)
    except (ssl.SSLError, OSError) as exc:
        option = "tls_cert" if pair.key is None else "tls_cert/tls_key"
        files = str(pair.cert) if pair.key is None else f"{pair.cert}, {pair.key}"
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise CertificateError(
            f"{_option(option)}: cannot load {files!r}: {reason} (a PEM certificate chain "
            "and its PEM private key are expected)"
        ) from None
    return context


def names_of(path: Path) -> list[str]:
    """Returns the DNS names a PEM certificate is for (its subject alternative names, else
    its common name), lower case."""
    # Imported here: the library costs 10 MiB of RSS that a balancer without HTTPS never uses.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [name.lower() for name in names]


def _option(name: str) -> str:
    if "/" in name:
        return " / ".join(_option(part) for part in name.split("/"))
    return f"{name} (RINGLB_{name.upper()}, --{name.replace('_', '-')})"


class Certificates:
    """The HTTPS listener's certificates, chosen per handshake by SNI; reloadable."""

    def __init__(self, certs: Sequence[Path], keys: Sequence[Path], min_version: str) -> None:
        self._certs, self._keys, self._min_version = list(certs), list(keys), min_version
        self._stamps = self._file_stamps()
        self._default, self._by_name = self._load()
        # The listening socket's context: it only hands each handshake to an inner one.
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = MIN_VERSIONS[min_version]
        self.context.set_alpn_protocols(ALPN)
        self.context.sni_callback = self._choose

    def _load(self) -> tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]:
        pairs = find_pairs(self._certs, self._keys)
        by_name: dict[str, ssl.SSLContext] = {}
        default = None
        for pair in pairs:
            context = server_context(pair, self._min_version)
            default = default or context
            for name in names_of(pair.cert):
                by_name.setdefault(name, context)
        assert default is not None
        return default, by_name

    def _file_stamps(self) -> dict[Path, int]:
        """Returns the modification time of every file in use (or found in a directory)."""
        stamps = {}
        for path in (*self._certs, *self._keys):
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for file in files:
                try:
                    stamps[file] = file.stat().st_mtime_ns
                except OSError:
                    stamps[file] = -1
        return stamps

    def reload_if_changed(self) -> bool:
        """Reloads when a file changed since the last look; returns whether it reloaded.
        A certificate renewed in two writes (chain, then key) may fail the first time: the
        second write changes the files again, and the reload that follows succeeds."""
        stamps = self._file_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return self.reload()

    def reload(self) -> bool:
        """Reads the files again; returns whether the new certificates are in use (on an
        error the old ones stay, and the error is logged)."""
        self._stamps = self._file_stamps()
        try:
            self._default, self._by_name = self._load()
        except (CertificateError, OSError, ValueError) as exc:
            log.error("TLS certificates not reloaded, the old ones stay: %s", exc)
            return False
        log.info("TLS certificates reloaded (%d name(s))", len(self._by_name))
        return True

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """Returns the context for a client that asked for `server_name` (None: no SNI)."""
        if server_name:
            name = server_name.lower()
            by_name = self._by_name
            context = by_name.get(name)
            if context is None and "." in name:
                context = by_name.get("*." + name.split(".", 1)[1])
            if context is not None:
                return context
        return self._default

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sslobj.context = self.context_for(server_name)


def client_context(ca_file: Path | None, verify: bool) -> ssl.SSLContext:
    """Returns the context for connections to replicas over HTTPS: verified against
    `ca_file` (None: the system's CAs) unless `verify` is off."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.set_alpn_protocols(ALPN)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
