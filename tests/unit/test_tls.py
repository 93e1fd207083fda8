"""The HTTPS listener's certificates (ringlb.dataplane.tls), the upgrade rules and the
redirect, in process: real handshakes on loopback, certificates made by the test."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from certs import TestCA, common_name
from ringlb.config import SettingsError, load_settings
from ringlb.dataplane import http11
from ringlb.dataplane.redirect import HttpsRedirect
from ringlb.dataplane.request import Request
from ringlb.dataplane.tls import CertificateError, Certificates, find_pairs


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    ca = TestCA(tmp_path)
    ca.issue("a", "a.test")
    ca.issue("b", "b.test", "*.b.test")
    return ca


async def handshake(
    certs: Certificates, ca: TestCA, name: str, most: ssl.TLSVersion | None = None
) -> tuple[str, str]:
    """Returns the common name served for `name` and the TLS version agreed."""

    class Quiet(asyncio.Protocol):
        pass

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Quiet, "127.0.0.1", 0, ssl=certs.context)
    try:
        context = ssl.create_default_context(cafile=ca.path)
        if most is not None:
            context.maximum_version = most
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=name
        )
        sslobj = writer.get_extra_info("ssl_object")
        served = common_name(sslobj.getpeercert(True)), sslobj.version()
        writer.close()
        return served
    finally:
        server.close()


async def test_sni_picks_exact_names_then_wildcards(ca: TestCA) -> None:
    certs = Certificates(
        [ca.dir / "a.crt", ca.dir / "b.crt"], [ca.dir / "a.key", ca.dir / "b.key"], "1.2"
    )
    assert (await handshake(certs, ca, "a.test"))[0] == "a.test"
    assert (await handshake(certs, ca, "b.test"))[0] == "b.test"
    assert (await handshake(certs, ca, "x.b.test"))[0] == "b.test"
    assert certs.context_for(None) is certs.context_for("unknown.test")  # the first pair


async def test_the_least_version_is_enforced(ca: TestCA) -> None:
    certs = Certificates([ca.dir], [], "1.3")  # a directory of NAME.crt + NAME.key
    assert (await handshake(certs, ca, "a.test"))[1] == "TLSv1.3"
    with pytest.raises(OSError):  # an SSLError or a reset, as the server hangs up
        await handshake(certs, ca, "a.test", most=ssl.TLSVersion.TLSv1_2)
    relaxed = Certificates([ca.dir], [], "1.2")
    assert (await handshake(relaxed, ca, "a.test", most=ssl.TLSVersion.TLSv1_2))[1] == "TLSv1.2"


async def test_reload_takes_new_files_and_keeps_the_old_ones_on_an_error(ca: TestCA) -> None:
    certs = Certificates([ca.dir / "a.crt"], [ca.dir / "a.key"], "1.2")
    ca.issue("a", "a.test", serial_note="renewed")
    assert certs.reload()
    assert (await handshake(certs, ca, "a.test"))[0] == "renewed"
    (ca.dir / "a.key").write_text("not a key")
    assert not certs.reload()
    assert (await handshake(certs, ca, "a.test"))[0] == "renewed"


def test_a_directory_pairs_certificates_with_keys_by_name(ca: TestCA) -> None:
    pairs = find_pairs([ca.dir], [])
    assert [(p.cert.name, p.key.name if p.key else None) for p in pairs] == [
        ("a.crt", "a.key"),
        ("b.crt", "b.key"),
    ]  # ca.pem has no ca.key: not a pair
    with pytest.raises(CertificateError, match=r"tls_key .* not used when tls_cert is a directory"):
        find_pairs([ca.dir], [ca.dir / "a.key"])


@pytest.mark.parametrize(
    ("files", "named", "culprit"),
    [
        (
            {"tls_cert": "missing.crt", "tls_key": "a.key"},
            "tls_cert (RINGLB_TLS_CERT",
            "missing.crt",
        ),
        ({"tls_cert": "a.crt", "tls_key": "missing.key"}, "tls_key (RINGLB_TLS_KEY", "missing.key"),
        (
            {"tls_cert": "a.crt", "tls_key": "b.key"},
            "tls_key (RINGLB_TLS_KEY",
            "b.key",
        ),  # mismatched
        ({"tls_cert": "a.key"}, "tls_cert (RINGLB_TLS_CERT", "a.key"),  # no certificate in it
    ],
)
def test_bad_files_are_settings_errors_naming_option_and_file(
    ca: TestCA, files: dict[str, str], named: str, culprit: str
) -> None:
    paths = {option: str(ca.dir / name) for option, name in files.items()}
    with pytest.raises(SettingsError) as error:
        load_settings(tls_port=0, **paths)
    assert named in str(error.value) and str(ca.dir / culprit) in str(error.value)


def test_tls_settings_that_need_each_other() -> None:
    with pytest.raises(SettingsError, match="tls_port needs tls_cert"):
        load_settings(tls_port=8443)
    with pytest.raises(SettingsError, match="tls_redirect needs tls_port"):
        load_settings(tls_redirect=True)
    with pytest.raises(SettingsError, match=r"upstream_tls_ca \(RINGLB_UPSTREAM_TLS_CA"):
        load_settings(upstream_tls=True, upstream_tls_ca="/no/such/ca.pem")


@pytest.mark.parametrize(
    ("method", "upgrade", "local", "kind"),
    [
        ("GET", b"websocket", False, http11.TUNNEL_UPGRADE),
        ("GET", b"WebSocket", False, http11.TUNNEL_UPGRADE),
        ("GET", b"foo/2, websocket", False, http11.TUNNEL_UPGRADE),
        ("GET", b"h2c", False, http11.IGNORED_UPGRADE),
        ("GET", b"websocket", True, http11.REFUSED_UPGRADE),  # the balancer's own paths
        ("POST", b"websocket", False, http11.REFUSED_UPGRADE),
        ("CONNECT", None, False, http11.REFUSED_UPGRADE),
    ],
)
def test_what_an_upgrade_becomes(
    method: str, upgrade: bytes | None, local: bool, kind: int
) -> None:
    assert http11.upgrade_kind(method, upgrade, local) == kind


class Written:
    def __init__(self) -> None:
        self.data = b""
        self.kept: bool | None = None
        self.peer = b"127.0.0.1"
        self.forwarding = None

    def write(self, data: bytes) -> None:
        self.data += data

    def answered(self, keep_alive: bool) -> None:
        self.kept = keep_alive


@pytest.mark.parametrize(
    ("host", "port", "location"),
    [
        (b"shop.test:8080", 8443, b"https://shop.test:8443/cart?x=1"),
        (b"shop.test", 443, b"https://shop.test/cart?x=1"),
        (b"[::1]:8080", 8443, b"https://[::1]:8443/cart?x=1"),
    ],
)
def test_the_redirect_keeps_host_and_target(host: bytes, port: int, location: bytes) -> None:
    raw = b"GET /cart?x=1 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    request = Request("GET", b"/cart?x=1", "/cart", raw, raw)
    client = Written()
    HttpsRedirect(port).begin(request, client)  # type: ignore[arg-type]
    assert client.data.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"\r\nLocation: " + location + b"\r\n" in client.data
    assert client.kept is True


async def test_a_changed_file_is_reloaded_and_an_unchanged_one_is_not(ca: TestCA) -> None:
    certs = Certificates([ca.dir / "a.crt"], [ca.dir / "a.key"], "1.2")
    assert not certs.reload_if_changed()
    ca.issue("a", "a.test", serial_note="rotated")
    assert certs.reload_if_changed()
    assert (await handshake(certs, ca, "a.test"))[0] == "rotated"
    assert not certs.reload_if_changed()
