"""The plain-message recognizers against httptools, the parser of the general path.

Whatever `plain_request` or `plain_response` accepts must be one whole message that
httptools accepts too and reads the same way, with none of the fields the general path
would rewrite. Hypothesis builds messages from pieces chosen to sit near every rule's edge
(case, whitespace, control bytes, duplicated and hop-by-hop fields, framing, trailing bytes);
the ordinary piece is the likeliest, so that a good share of the messages are plain and
each one differs from a plain message in a piece or two.
"""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlb.dataplane import http11
from ringlb.dataplane.plain import plain_request, plain_response, request_fields

REQUEST_SPECIAL = http11.HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"via"}


class Recorder:
    """httptools protocol that records everything it is told."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.begun = 0
        self.completed = 0

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.completed += 1


def parse(parser_class: type, data: bytes) -> tuple[Recorder, object] | None:
    """Returns what httptools read from `data`, or None when it refused it."""
    recorder = Recorder()
    parser = parser_class(recorder)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    return recorder, parser


def named(headers: list[tuple[bytes, bytes]], names: set[bytes] | frozenset[bytes]) -> list:
    return [n for n, _ in headers if n.lower() in names or n.lower().startswith(b"proxy-")]


# -- building blocks near the edges -------------------------------------------------------


def usually(ordinary: bytes, *others: bytes) -> st.SearchStrategy[bytes]:
    """`ordinary` about two times in three, else one of `others`."""
    return st.sampled_from([ordinary] * (2 * len(others)) + list(others))


FIELD_NAMES = st.sampled_from(
    [b"Accept", b"User-Agent", b"X-Request-ID", b"Cookie"] * 5
    + [
        b"Host",
        b"host",
        b"HOST",
        b"Accept",
        b"User-Agent",
        b"X-Request-ID",
        b"Cookie",
        b"Connection",
        b"Keep-Alive",
        b"Content-Length",
        b"Transfer-Encoding",
        b"TE",
        b"Teapot",
        b"Trailer",
        b"Upgrade",
        b"Proxy-Authorization",
        b"Proxy-X",
        b"Expect",
        b"Via",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"Bad Name",
        b"Bad\x00",
        b"",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [b"", b"1", b"0", b"12", b"chunked", b"close", b"a b", b" padded\t ", b"\xe9t\xe9"]
    ),
    st.binary(max_size=12),
)
SEPARATORS = usually(b": ", b":", b":\t", b" :")
FIELD_LINES = st.lists(
    st.tuples(FIELD_NAMES, SEPARATORS, VALUES).map(lambda t: t[0] + t[1] + t[2] + b"\r\n"),
    max_size=6,
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(usually(b"GET", b"HEAD", b"get", b"POST", b"G T"))
    target = draw(
        st.one_of(
            st.sampled_from([b"/", b"/home", b"/a?b=c&d", b"*", b"http://h/x", b"/%41", b"/a b"]),
            st.binary(max_size=10).map(lambda b: b"/" + b),
        )
    )
    version = draw(usually(b"HTTP/1.1", b"HTTP/1.0", b"http/1.1", b"HTTP/2.0"))
    fields = draw(FIELD_LINES)
    host = draw(usually(b"Host: lb\r\n", b"", b"hOsT:\tlb:5000 \r\n"))
    fields.insert(draw(st.integers(0, len(fields))), host)
    ending = draw(usually(b"\r\n", b"\n", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\nbody"))
    return method + b" " + target + b" " + version + b"\r\n" + b"".join(fields) + ending


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(usually(b"200", b"204", b"304", b"100", b"404", b"503", b"999", b"20"))
    reason = draw(usually(b" OK", b"", b" ", b" Not\x01Fine"))
    version = draw(usually(b"HTTP/1.1", b"HTTP/1.0", b"http/1.1"))
    body = draw(st.binary(max_size=8))
    declared = draw(st.sampled_from([len(body), len(body) + 1, max(0, len(body) - 1)]))
    length_lines = draw(
        st.sampled_from(
            [
                [b"Content-Length: %d\r\n" % declared],
                [b"content-length:%d \r\n" % declared],
                [],
                [b"Content-Length: %d\r\n" % declared] * 2,
                [b"Content-Length: +%d\r\n" % declared],
            ]
        )
    )
    fields = draw(FIELD_LINES)
    cut = draw(st.integers(0, len(fields)))
    head = b"".join(fields[:cut] + length_lines + fields[cut:])
    return version + b" " + status + reason + b"\r\n" + head + b"\r\n" + body


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(requests())
def test_a_plain_request_is_one_whole_request_httptools_reads_alike(data: bytes) -> None:
    plain = plain_request(data)
    if plain is None:
        return
    parsed = parse(httptools.HttpRequestParser, data)
    assert parsed is not None, data
    recorder, parser = parsed
    method, target, path = plain.groups()
    assert path == target.partition(b"?")[0]
    assert recorder.begun == recorder.completed == 1 and not recorder.body
    assert parser.get_method() == method and recorder.url == target
    assert parser.get_http_version() == "1.1" and parser.should_keep_alive()
    assert [n.lower() for n in named(recorder.headers, REQUEST_SPECIAL | {b"host"})] == [b"host"]
    assert request_fields(data) == recorder.headers


@settings(max_examples=3000, deadline=None)
@given(responses())
def test_a_plain_response_is_one_whole_response_httptools_reads_alike(data: bytes) -> None:
    status = plain_response(data)
    if not status:
        return
    parsed = parse(httptools.HttpResponseParser, data)
    assert parsed is not None, data
    recorder, parser = parsed
    assert recorder.begun == recorder.completed == 1
    assert parser.get_status_code() == status and status >= 200 and status not in (204, 304)
    assert [n.lower() for n in named(recorder.headers, http11.HOP_BY_HOP)] == [b"content-length"]
    length = next(int(v) for n, v in recorder.headers if n.lower() == b"content-length")
    assert data.endswith(recorder.body) and len(recorder.body) == length


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_are_never_plain_unless_httptools_accepts_them(data: bytes) -> None:
    if plain_request(data) is not None:
        assert parse(httptools.HttpRequestParser, data) is not None
    if plain_response(data):
        assert parse(httptools.HttpResponseParser, data) is not None


# -- examples -----------------------------------------------------------------------------

CURL = b"GET /home?x=1 HTTP/1.1\r\nHost: lb:5000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"


def test_everyday_requests_are_plain() -> None:
    assert plain_request(CURL).groups() == (b"GET", b"/home?x=1", b"/home")
    assert plain_request(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n").groups() == (b"HEAD", b"/", b"/")
    assert plain_request(b"GET /Path HTTP/1.1\r\nHOST: a\r\nX-Request-ID: 123456\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: the general path adds one
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nproxy-authorization: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not all there yet
        b"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",
    ],
)
def test_requests_the_general_path_must_see_are_not_plain(data: bytes) -> None:
    assert plain_request(data) is None


AIOHTTP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Date: Thu, 26 Nov 2026 15:24:31 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n{}"
)


def test_a_whole_response_with_a_length_is_plain() -> None:
    assert plain_response(AIOHTTP) == 200
    assert plain_response(AIOHTTP.replace(b"200 OK", b"503 Service Unavailable")) == 503


@pytest.mark.parametrize(
    "data",
    [
        AIOHTTP[:-1],  # the body is still coming
        AIOHTTP + b"x",
        AIOHTTP.replace(b"Content-Length: 2\r\n", b"Transfer-Encoding: chunked\r\n"),
        AIOHTTP.replace(b"Server", b"Connection: close\r\nServer"),
        AIOHTTP.replace(b"Server", b"Keep-Alive: timeout=5\r\nServer"),
        AIOHTTP.replace(b"HTTP/1.1", b"HTTP/1.0"),
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_responses_the_general_path_must_rewrite_are_not_plain(data: bytes) -> None:
    assert plain_response(data) == 0
