"""Per-call traces (pbx.b2bua.trace): what a call's ladder holds, and the bounds on what is kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.trace import CallTrace, CallTracer, summarise, template_name

from .fakes import Harness

INVITE = (
    b"INVITE sip:1002@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP x\r\n"
    b"f: <sip:1001@pbx>;tag=1\r\nTo: <sip:1002@pbx>\r\ni: abc@host\r\nCSeq: 1 INVITE\r\n"
    b"Content-Type: application/sdp\r\nX-Other: no\r\n\r\n"
    b"v=0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETKEYSECRETKEYSECRETKEYSECRETKEY12\r\n"
)
FLOW = SimpleNamespace(remote_address=("10.0.0.1", 5060))


def fake_call(call_id: str, status: int = 200) -> SimpleNamespace:
    """What the tracer reads of a call that ended."""
    cdr = SimpleNamespace(
        end=5.0, cause="normal" if status == 200 else "busy", status=status, hangup_by="caller"
    )
    return SimpleNamespace(id=call_id, cdr=lambda: cdr)


class SummaryTests(SynchronousTestCase):
    def test_first_line_key_headers_and_a_masked_truncated_body(self) -> None:
        summary = summarise(INVITE, body_bytes=40)
        self.assertEqual(summary["line"], "INVITE sip:1002@pbx SIP/2.0")
        self.assertEqual(
            summary["headers"],
            {
                "via": "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
                "from": "<sip:1001@pbx>;tag=1",
                "to": "<sip:1002@pbx>",
                "cseq": "1 INVITE",
                "content-type": "application/sdp",
            },
        )
        self.assertNotIn("SECRET", summary["body"])
        self.assertIn("more bytes]", summary["body"])

    def test_template_names_are_relative_to_the_tenant(self) -> None:
        self.assertEqual(template_name("/etc/pbx/dialplans/acme/ivr/main.j2", "acme"), "ivr/main.j2")
        self.assertEqual(template_name("main.j2", "acme"), "main.j2")


class BoundsTests(SynchronousTestCase):
    def test_a_trace_keeps_at_most_its_events_and_bytes_and_always_its_end(self) -> None:
        trace = CallTrace("c", 0.0, max_events=5, max_bytes=100_000)
        for i in range(20):
            trace.add({"kind": "note", "text": str(i)})
        trace.add({"kind": "call", "text": "ended"}, force=True)
        self.assertEqual(len(trace.events), 6)
        self.assertEqual(trace.dropped, 15)
        small = CallTrace("c", 0.0, max_events=1000, max_bytes=1000)
        for _ in range(50):
            small.add({"kind": "note", "text": "x" * 100})
        self.assertLessEqual(small.size, 1000)
        self.assertGreater(small.dropped, 0)

    def test_ended_calls_are_kept_for_the_last_n_and_failed_ones_longer(self) -> None:
        clock = Clock()
        tracer = CallTracer(clock, keep=3, keep_failed=2)
        for i in range(10):
            call_id = f"call{i}"
            trace = CallTrace(call_id, 0.0)
            tracer._active[call_id] = trace
            tracer._sip[call_id] = (trace, "caller")
            tracer.call_ended(fake_call(call_id, status=486 if i in (1, 2) else 200))
        kept = [t.call_id for t in tracer.traces()]
        self.assertEqual(kept, ["call9", "call8", "call7", "call2", "call1"])
        self.assertEqual(len(tracer), 5)
        self.assertEqual(set(tracer._sip), set(kept))  # the forgotten calls' Call-IDs are no longer matched
        self.assertIsNone(tracer.get("call0"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_messages_of_unknown_calls_are_ignored_and_late_ones_are_added(self) -> None:
        tracer = CallTracer(Clock(), keep=2, keep_failed=0)
        tracer.sip_message("recv", "UDP", FLOW, INVITE)  # nothing traced: nothing to do
        trace = CallTrace("abc@host", 0.0)
        tracer._active["abc@host"] = trace
        tracer._sip["abc@host"] = (trace, "caller")
        tracer.sip_message("recv", "UDP", FLOW, INVITE)
        tracer.sip_message("send", "UDP", FLOW, INVITE.replace(b"i: abc@host", b"Call-ID: other"))
        events = trace.as_dict()["events"]
        self.assertEqual([(e["dir"], e["peer"]) for e in events], [("in", "UDP 10.0.0.1:5060")])
        tracer.call_ended(fake_call("abc@host"))
        tracer.sip_message("send", "UDP", FLOW, INVITE.replace(b"INVITE sip", b"BYE sip"))
        self.assertEqual(
            trace.as_dict()["events"][-1]["line"], "BYE sip:1002@pbx SIP/2.0"
        )  # after the end: still its call

    def test_a_call_up_a_while_after_the_callers_ack_has_its_trace_packed_and_reads_the_same(self) -> None:
        clock = Clock()
        tracer = CallTracer(clock, keep=2, keep_failed=0)
        trace = CallTrace("abc@host", 0.0)
        tracer._active["abc@host"] = trace
        tracer._sip["abc@host"] = (trace, "caller")
        tracer.sip_message("recv", "UDP", FLOW, INVITE)
        trace.add({"t": 0.5, "kind": "note", "text": "answered by 1002"})
        tracer.sip_message("send", "UDP", FLOW, INVITE.replace(b"INVITE sip:1002@pbx", b"SIP/2.0 200 OK"))
        before = trace.as_dict()
        ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
        tracer.sip_message("send", "UDP", FLOW, ack)  # sent: not the caller's ACK
        self.assertIsNone(trace.packed)
        tracer.sip_message("recv", "UDP", FLOW, ack)
        tracer._pack_due()
        self.assertIsNone(trace.packed)  # not yet: a short call never pays for packing
        clock.advance(tracer.pack_after)
        held = tracer.memory()
        tracer._pack_due()  # as the next call starts
        self.assertIsNotNone(trace.packed)
        self.assertLess(tracer.memory(), held)
        self.assertEqual(trace.size, held)  # the cap still counts what the events were
        self.assertEqual(len(tracer._to_pack), 0)
        after = trace.as_dict()
        self.assertEqual(after["events"][:-2], before["events"])
        self.assertEqual([e["line"] for e in after["events"][-2:]], ["ACK sip:1002@pbx SIP/2.0"] * 2)
        self.assertEqual(trace.events[0]["raw"], INVITE)
        tracer.sip_message("recv", "UDP", FLOW, INVITE.replace(b"INVITE sip", b"BYE sip"))  # after packing
        self.assertEqual(trace.as_dict()["events"][-1]["line"], "BYE sip:1002@pbx SIP/2.0")
        self.assertEqual(trace.summary()["events"], 6)
        trace.pack()  # again: the unpacked and the new events together
        self.assertEqual(trace.as_dict()["events"][:-1], after["events"])

    def test_traces_packed_after_the_first_use_its_events_as_a_dictionary_and_read_the_same(self) -> None:
        clock = Clock()
        tracer = CallTracer(clock)
        ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
        traces = []
        for n in range(3):
            call_id = f"call{n}@host"
            trace = CallTrace(call_id, 0.0)
            tracer._active[call_id] = trace
            tracer._sip[call_id] = (trace, "caller")
            for message in (INVITE, ack):
                tracer.sip_message("recv", "UDP", FLOW, message.replace(b"abc@host", call_id.encode()))
            traces.append((trace, trace.as_dict()))
            clock.advance(tracer.pack_after)
            tracer._pack_due()
        first, second, third = (trace for trace, _ in traces)
        self.assertIsNone(first._zdict)
        self.assertIsNotNone(second._zdict)
        self.assertIs(second._zdict, third._zdict)  # one dictionary shared by the traces packed after
        assert first.packed is not None and second.packed is not None
        self.assertLess(len(second.packed), len(first.packed) / 2)
        for trace, before in traces:
            self.assertEqual(trace.as_dict(), before)
        self.assertEqual(tracer.memory(), sum(t.held for t, _ in traces) + len(second._zdict or b""))

    def test_the_next_call_packs_calls_still_up_and_never_ended_ones(self) -> None:
        clock = Clock()
        tracer = CallTracer(clock)
        ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
        traces = []
        for call_id in ("abc@host", "ended@host"):
            trace = CallTrace(call_id, 0.0)
            tracer._active[call_id] = trace
            tracer._sip[call_id] = (trace, "caller")
            tracer.sip_message("recv", "UDP", FLOW, INVITE.replace(b"abc@host", call_id.encode()))
            tracer.sip_message("recv", "UDP", FLOW, ack.replace(b"abc@host", call_id.encode()))
            traces.append(trace)
        tracer.call_ended(fake_call("ended@host"))
        clock.advance(1.0)
        caller = SimpleNamespace(tenant="t", extension="1001", trunk="", number="")
        flow = SimpleNamespace(transport="UDP", remote_address=("10.0.0.1", 5060))
        tracer.call_started(
            SimpleNamespace(
                id="next@host",
                started_at=1.0,
                caller=caller,
                dialed="1002",
                txn=SimpleNamespace(flow=flow),
                invite=SimpleNamespace(to_bytes=lambda: b"x"),
            )
        )
        self.assertIsNotNone(traces[0].packed)
        self.assertIsNone(traces[1].packed)  # ended before its time: kept as it is
        self.assertEqual(len(tracer._to_pack), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tracing_off_keeps_nothing(self) -> None:
        tracer = CallTracer(Clock(), keep=0, keep_failed=0)
        tracer.call_started(SimpleNamespace(id="x"))
        self.assertEqual(len(tracer), 0)

    def test_a_call_keeps_the_invite_as_received_and_a_leg_its_invite_as_sent(self) -> None:
        tracer = CallTracer(Clock())
        tracer.sip_message("recv", "UDP", FLOW, INVITE)  # no trace knows abc@host yet
        sent = INVITE.replace(b"i: abc@host", b"Call-ID: leg@pbx")
        tracer.sip_message("send", "UDP", FLOW, sent)

        def rewritten() -> bytes:
            raise AssertionError("the message written again")

        caller = SimpleNamespace(tenant="t", extension="1001", trunk="", number="")
        flow = SimpleNamespace(transport="UDP", remote_address=("10.0.0.1", 5060))
        call = SimpleNamespace(
            id="abc@host",
            started_at=0.0,
            caller=caller,
            dialed="1002",
            txn=SimpleNamespace(flow=flow),
            invite=SimpleNamespace(to_bytes=rewritten),
        )
        tracer.call_started(call)
        leg = SimpleNamespace(
            extension="1002",
            target=None,
            call_id="leg@pbx",
            invite=SimpleNamespace(to_bytes=rewritten),
            destination=("udp", "10.0.0.2", 5062),
        )
        tracer.leg_started(call, leg)
        trace = tracer.get("abc@host")
        assert trace is not None
        self.assertEqual([e["raw"] for e in trace.events], [INVITE, sent])
        self.assertEqual([e["party"] for e in trace.events], ["caller", "leg1"])
        other = SimpleNamespace(
            **{**vars(call), "id": "other@host", "invite": SimpleNamespace(to_bytes=lambda: b"x")}
        )
        tracer.call_started(other)  # no INVITE seen for it: written again
        self.assertEqual([e["raw"] for e in tracer.get("other@host").events], [b"x"])  # type: ignore[union-attr]


class LiveCallTests(SynchronousTestCase):
    def test_a_dialled_call_has_its_actions_with_lines_its_legs_and_its_end(self) -> None:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        h = Harness.build(path, "set x=1\ndial 1002 timeout=5\nhangup\n")
        tracer = CallTracer(h.clock)
        h.b2bua.observers.append(tracer)
        h.register_1002()
        phone = h.place_call()
        h.clock.advance(5)  # the ring timeout
        del phone
        (trace,) = list(tracer.traces())
        kinds = [e["kind"] for e in trace.events]
        self.assertEqual(kinds[0], "sip")  # the caller's INVITE
        actions = [(e["template"], e["lineno"], e["text"]) for e in trace.events if e["kind"] == "action"]
        self.assertEqual(
            actions,
            [("main.j2", 1, "set x=1"), ("main.j2", 2, "dial 1002 timeout=5"), ("main.j2", 3, "hangup")],
        )
        self.assertIn("timer", kinds)
        parties = trace.as_dict()["parties"]
        self.assertEqual([p["id"] for p in parties], ["caller", "leg1"])
        leg_events = [e for e in trace.as_dict()["events"] if e.get("party") == "leg1"]
        self.assertEqual(leg_events[0]["line"].split()[0], "INVITE")
        self.assertEqual(trace.events[-1]["kind"], "call")
        self.assertTrue(trace.failed)
        self.assertEqual(tracer.get(parties[1]["call_id"]), trace)  # found by a leg's Call-ID too
        self.assertEqual(parties[0], {"id": "caller", "label": "1001", "call_id": trace.call_id})
