"""Messages carry their id, and the id survives what RETR does to them."""

import random

from chaoslib.mail import message, message_id, wire_body


def test_the_id_is_found_in_what_retr_sends():
    rng = random.Random(7)
    for i in range(200):
        mid = f"u1@acme.example#m{i}"
        data = message(rng, mid, big=i % 50 == 0)
        assert message_id(wire_body(data)) == mid
        assert data.count(b"X-Chaos-Id") == 1


def test_messages_have_the_shapes_that_matter():
    rng = random.Random(11)
    msgs = [message(rng, f"x#{i}") for i in range(300)]
    assert any(b"\n." in m for m in msgs), "lines that start with a dot"
    assert any(not m.endswith(b"\n") for m in msgs), "no final newline"
    assert any(b"\r\n" not in m for m in msgs) and any(b"\r\n" in m for m in msgs)
    big = message(rng, "x#big", big=True)
    assert len(big) > 100_000


def test_no_id_in_foreign_mail():
    assert message_id(b"Subject: hi\r\n\r\nX-Chaos-Idx: no\r\n") is None
