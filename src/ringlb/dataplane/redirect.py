"""HttpsRedirect: what the plain listener does with proxied requests when the balancer is
told to send clients to HTTPS (`tls_redirect`): a 308 to the same target on the HTTPS
listener. It stands where the `Forwarder` stands (`begin`), so a connection needs no
check of its own; the balancer's own paths are still answered on the plain listener.
"""

from __future__ import annotations

from ringlb.dataplane import http11
from ringlb.dataplane.forward import Client
from ringlb.dataplane.request import Request


class HttpsRedirect:
    """Answers every request with `308 Permanent Redirect` to `https://HOST:port/target`
    (HOST: the request's Host without its port)."""

    def __init__(self, https_port: int) -> None:
        self.port = https_port

    def begin(self, request: Request, client: Client) -> None:
        host = next((v for n, v in request.fields() if n.lower() == b"host"), b"localhost")
        # An IPv6 literal keeps its brackets.
        bracket = host.startswith(b"[")
        name = host.split(b"]", 1)[0] + b"]" if bracket else host.split(b":", 1)[0]
        # A body still arriving is not read: the connection cannot carry another request.
        keep_alive = request.keep_alive and request.stream is None
        port = b"" if self.port == 443 else b":%d" % self.port
        location = b"https://%s%s%s" % (name, port, request.target)
        client.write(
            http11.serialize_response(
                308,
                [(b"Location", location)],
                b"",
                keep_alive=keep_alive,
                head=request.head_only,
            )
        )
        client.answered(keep_alive)
