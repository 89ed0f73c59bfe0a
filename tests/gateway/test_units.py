"""Pure parts of the gateway: cursors, the allowlist, tokens, CORS, bounded subscribers."""

from __future__ import annotations

import pytest

from synapse.gateway.access import Cors, StreamPolicy, token_ok
from synapse.gateway.channel import SLOW, Channel, Shape, Subscriber, fan_out, frame
from synapse.gateway.cursor import KAFKA, BadCursor, format_cursor, parse_cursor
from synapse.gateway.redisreader import decode_reply
from synapse.gateway.sse import entry, event_view, message


def test_cursor_round_trips_stream_names_with_separators() -> None:
    """Names holding `,`, `/`, `%` or newlines survive format -> parse."""
    streams = ["plain", "a,b", "x/y", "100%", "line\nbreak"]
    positions = {s: (1700000000000 + i, i) for i, s in enumerate(streams)}
    text = format_cursor(streams, positions)
    assert "\n" not in text and text.startswith("plain/1700000000000-0,a%2Cb/")
    assert parse_cursor(text, streams) == positions


def test_cursor_ignores_streams_not_asked_for_and_rejects_garbage() -> None:
    """A pair for another stream is skipped; a malformed cursor is a BadCursor."""
    assert parse_cursor("a/1-0,gone/5-5", ["a", "b"]) == {"a": (1, 0)}
    assert parse_cursor("", ["a"]) == {}
    for bad in ("a", "a/1", "/1-0", "a/x-1", "a/1-0,,b/2-0"):
        with pytest.raises(BadCursor):
            parse_cursor(bad, ["a"])


def test_policy_serves_internal_streams_only_by_exact_name() -> None:
    """Default: all but synapse:*; globs never reach synapse:*; an exact name does."""
    default = StreamPolicy.parse(None)
    assert default.allows("orders") and not default.allows("synapse:dlq")
    globbed = StreamPolicy.parse("orders-*, synapse:*, *")
    assert globbed.allows("orders-eu") and globbed.allows("other")
    assert not globbed.allows("synapse:dlq") and not globbed.allows("synapse:retry:svc")
    exact = StreamPolicy.parse("orders-*,synapse:dlq")
    assert exact.allows("synapse:dlq") and not exact.allows("other")


def test_token_by_bearer_header_or_query_only_when_exact() -> None:
    """Bearer header or query token; wrong, empty or other schemes are refused."""
    assert token_ok(None, None, None)
    assert token_ok("t0k", "Bearer t0k", None) and token_ok("t0k", "bearer t0k", None)
    assert token_ok("t0k", None, "t0k")
    for header, query in ((None, None), ("Basic t0k", None), ("Bearer t0", None), (None, "")):
        assert not token_ok("t0k", header, query)


def test_cors_answers_only_listed_origins() -> None:
    """Headers for a listed origin (or any with *), none otherwise."""
    cors = Cors.of(["https://ops.example/"])
    assert cors.headers("https://ops.example")["Access-Control-Allow-Origin"] == (
        "https://ops.example"
    )
    assert cors.headers("https://evil.example") == {}
    assert Cors().headers("https://ops.example") == {}
    assert Cors.of(["*"]).headers("https://a.example")["Access-Control-Allow-Origin"] == "*"


class FakeSocket:
    """A transport stand-in whose peer reads nothing: every write stays buffered."""

    def __init__(self) -> None:
        self.buffered: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buffered.append(data)

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.buffered))

    def is_closing(self) -> bool:
        return False


def test_subscriber_is_dropped_once_it_falls_a_buffer_behind() -> None:
    """Bytes waiting past the limit drop the subscriber, while catching up and once live."""
    reasons: list[str] = []
    sub = Subscriber(Shape(("s",), None, True), 100, reasons.append)
    sub.push(b"x" * 150, frame(b"x" * 150))  # one read bigger than the limit alone is fine
    sock = FakeSocket()
    sub.go_live(sock, chunked=True)
    assert sock.buffered == [b"96\r\n" + b"x" * 150 + b"\r\n"] and sub.chunks == []
    sub.push(b"y", frame(b"y"))  # the socket still holds 150 bytes: over the limit
    assert reasons == [SLOW] and sub.dropped == SLOW and sub.done.is_set()
    waiting = Subscriber(Shape(("s",), None, True), 100, reasons.append)
    waiting.push(b"a" * 60, frame(b"a" * 60))
    waiting.push(b"b" * 60, frame(b"b" * 60))
    assert reasons == [SLOW, SLOW] and waiting.chunks == []


def test_channel_encodes_once_for_all_and_filters_types() -> None:
    """Every subscriber gets the same bytes object; ids carry the shared positions."""
    positions = {"a": (5, 0), "b": (7, 0)}
    channel = Channel(Shape(("a", "b"), ("m.*",), False), positions)
    subs = [Subscriber(channel.shape, 1 << 20, lambda r: None) for _ in range(3)]
    socks = [FakeSocket() for _ in subs]
    for sub, sock in zip(subs, socks, strict=True):
        sub.go_live(sock, chunked=False)
    channel.subscribers.update(subs)
    entries = [
        entry("a", "6-0", (6, 0), [b"type", b"m.x", b"data", b'{"k": 1}']),
        entry("a", "6-1", (6, 1), [b"type", b"other", b"data", b"{}"]),
    ]
    assert fan_out([("a", entries)], positions, [channel]).deliveries == 3
    chunks = [sock.buffered[0] for sock in socks]
    assert chunks[0] is chunks[1] is chunks[2]
    assert chunks[0].startswith(b"id: a/6-0,b/7-0\ndata: {")
    assert positions == {"a": (6, 1), "b": (7, 0)}


def test_invalid_entries_are_shown_with_their_fields_and_reason() -> None:
    """Bad JSON is not hidden: type from the field, raw fields, `invalid` = the reason."""
    event_type, view = event_view("synapse:dlq", "1-0", [b"type", b"m.x", b"data", b"{nope"])
    assert event_type == "m.x" and view["invalid"] == "invalid_json"
    assert view["fields"] == {"type": "m.x", "data": "{nope"}


def test_sse_fields_cannot_be_split_by_newlines_in_a_type() -> None:
    """A type with CR/LF cannot inject SSE lines."""
    out = message("s/1-0", "evil\nid: 9-9\r", b"{}")
    assert out == b"id: s/1-0\nevent: evilid: 9-9\ndata: {}\n\n"


def test_fan_out_skips_what_was_already_read_and_streams_nobody_watches() -> None:
    """A reply that raced a restart repeats nothing; positions advance to the last entry."""
    positions = {"a": (5, 0)}
    channel = Channel(Shape(("a",), None, True), positions)
    sock = FakeSocket()
    sub = Subscriber(channel.shape, 1 << 20, lambda r: None)
    sub.go_live(sock, chunked=False)
    channel.subscribers.add(sub)
    fields = [b"type", b"t", b"data", b"{}"]
    reply = [
        [b"a", [[b"4-0", fields], [b"5-0", fields], [b"6-0", fields]]],
        [b"gone", [[b"9-0", fields]]],
    ]
    tally = fan_out(decode_reply(reply), positions, [channel])
    assert (tally.read, tally.deliveries, tally.first_ms) == (1, 1, 6)
    assert positions == {"a": (6, 0)}
    assert sock.buffered[0].startswith(b"id: a/6-0\n") and len(sock.buffered) == 1


def test_kafka_cursor_holds_every_partitions_next_offset() -> None:
    """On Kafka a pair per partition, the offset read next; unlisted partitions read from
    their first record; a topic with no partition known yet is `<topic>/0-0`."""
    pos = KAFKA.advance(KAFKA.advance((-1, 4), (1, 5)), (2, 0))
    assert pos == (-1, 5, 0)
    text = format_cursor(["t", "u"], {"t": pos, "u": ()}, KAFKA)
    assert text == "t/0-0,t/1-6,t/2-1,u/0-0"
    back = parse_cursor(text, ["t", "u"], KAFKA)
    assert back == {"t": pos, "u": (-1,)}
    assert parse_cursor("t/2-7", ["t"], KAFKA) == {"t": (-1, -1, 6)}
    assert KAFKA.start((-1, 9), (3, 4, 8)) == (-1, 4, -1)  # never past joined; unlisted: all
    assert KAFKA.ahead((0, 9), (3, 4)) and not KAFKA.ahead((3, 4, 99), (3, 4))
    assert KAFKA.after((3, 4), (1, 5)) and not KAFKA.after((3, 4), (1, 4))
    assert KAFKA.after((3,), (2, 0))  # a partition added since: its first record is new
    assert KAFKA.restart((3, 9), (1, 0)) == (3, -1)
    with pytest.raises(BadCursor):
        parse_cursor("t/1000000-1", ["t"], KAFKA)
