"""The audit's arithmetic on hand-made ledgers: each rule can fail."""

from chaoslib.ledger import Ledger, Session, failed
from chaoslib.mail import wire_body

A, B = "u1@acme.example", "u2@acme.example"


def ledger_with(*ids_and_boxes):
    led = Ledger()
    for mid, box in ids_and_boxes:
        led.delivered(mid, box, b"X-Chaos-Id: " + mid.encode() + b"\n\nbody\n")
    return led


def session(box, t0, t1, last=None, deleted=(), quit="none", quit_ok=0.0, listed=()):
    s = Session(box, t0, t1)
    s.last_ok_sent = last if last is not None else t0
    s.deleted, s.listed, s.quit, s.quit_ok = set(deleted), set(listed), quit, quit_ok
    return s


def test_an_untouched_run_audits_clean():
    led = ledger_with(("a1", A), ("a2", A), ("b1", B))
    led.session(session(A, 1, 1.1, last=2, deleted={"a1"}, quit="ok", quit_ok=2.1))
    figures = led.audit({A: {"a2"}, B: {"b1"}})
    assert failed(figures) == []
    assert figures["committed_quits"] == 1 and figures["deleted_committed"] == 1


def test_a_message_gone_that_nobody_deleted_is_lost():
    led = ledger_with(("a1", A), ("a2", A))
    figures = led.audit({A: {"a2"}})
    assert figures["lost"] == 1 and failed(figures) == ["lost"]


def test_a_dele_without_a_committed_quit_must_not_delete():
    led = ledger_with(("a1", A), ("a2", A))
    led.session(session(A, 1, 1.1, deleted={"a1"}, quit="err"))
    led.session(session(A, 3, 3.1, deleted={"a2"}, quit="none"))
    figures = led.audit({A: set()})
    assert figures["deleted_without_quit"] == 2 and figures["lost"] == 0


def test_an_unanswered_quit_may_have_deleted_or_not():
    led = ledger_with(("a1", A), ("a2", A))
    led.session(session(A, 1, 1.1, deleted={"a1", "a2"}, quit="ambiguous"))
    assert failed(led.audit({A: {"a2"}})) == []


def test_a_failed_delivery_may_be_there_or_not():
    led = ledger_with(("a1", A))
    led.delivered("a2", A, b"x", confirmed=False)
    assert failed(led.audit({A: {"a1"}})) == []
    assert failed(led.audit({A: {"a1", "a2"}})) == []


def test_a_committed_delete_that_comes_back_is_resurrected():
    led = ledger_with(("a1", A))
    led.session(session(A, 1, 1.1, deleted={"a1"}, quit="ok", quit_ok=2))
    assert led.audit({A: {"a1"}})["resurrected"] == 1


def test_served_after_a_seen_delete_to_a_later_login_counts_but_not_to_an_earlier_one():
    led = ledger_with(("a1", A))
    led.session(session(A, 1, 1.1, deleted={"a1"}, quit="ok", quit_ok=2))
    led.session(session(A, 0.5, 0.6, listed={"a1"}))  # logged in before: its snapshot had it
    assert led.audit({A: set()})["resurrected"] == 0
    led.session(session(A, 2.5, 2.6, listed={"a1"}))
    assert led.audit({A: set()})["resurrected"] == 1


def test_overlapping_holders_are_counted_and_sequential_ones_are_not():
    led = ledger_with()
    led.session(session(A, 1, 1.1, last=2.0, quit="ok", quit_ok=2.05))
    led.session(session(A, 2.1, 2.2, last=3.0))  # after the first's last +OK
    led.session(session(B, 1, 1.1, last=5.0))
    assert led.two_holders() == (0, 0.0, 0)
    led.session(session(B, 4.0, 4.5, last=4.6))  # got the mailbox while the first still answered
    pairs, longest, possible = led.two_holders()
    assert pairs == 1 and abs(longest - 0.5) < 1e-9 and possible == 0
    assert failed(led.audit({})) == ["two_holders"]


def test_bodies_are_checked_against_the_delivery_and_the_mailbox():
    led = Ledger()
    data = b"X-Chaos-Id: a1\n\nbody\n"
    led.delivered("a1", A, data)
    assert led.check_body(A, "a1", wire_body(data), wire_body) == "a1"
    assert led.check_body(B, "a1", wire_body(data), wire_body) is None
    assert led.check_body(A, "a1", wire_body(data) + b"x\r\n", wire_body) is None
    assert led.check_body(A, None, b"junk\r\n", wire_body) is None
    assert (led.counts["wrong_mailbox"], led.counts["corrupted"], led.counts["messages_checked"]) == (1, 2, 4)


def test_an_answer_that_only_arrived_late_is_a_possible_overlap_not_a_certain_one():
    led = ledger_with()
    first = session(A, 1, 1.1, last=2.0)
    first.last_ok_read = 4.0  # sent before the second's PASS, read after (a stopped replica resumed)
    led.session(first)
    led.session(session(A, 3.0, 3.1, last=3.5))
    assert led.two_holders() == (0, 0.0, 1)
    figures = led.audit({})
    assert figures["two_holders_possible"] == 1 and failed(figures) == []
