"""UDP datagrams dealt with before parsing while overload control sheds (RFC 3261 8.2.6.2, 17.2.3; RFC 7339).

Offered several times what it holds, a server refuses most new requests; each refusal must cost little
beside an admitted exchange, or refusing is what fills the core. `ShedScreen.screen` is asked by the
pre-parse entry (`pbx.sip.intake.DatagramIntake`, after the per-source admission) for every UDP datagram
while the guard sheds (`OverloadGuard.shedding`), and deals with what it can from the raw bytes:

- a byte-identical retransmission of a request screened before (`SipStack.by_bytes`, by its bytes and
  source): the 503 it got again, or to what became of it (its stateless answer again, or its transaction);
- a REGISTER the guard surely admits (`OverloadGuard.surely_admits`: one with credentials, or a new one
  within the share admitted): on to the parser at once, unscanned (it is parsed anyway; the parser's way
  knows a retransmission as before), its key kept under its bytes once parsed;
- a new INVITE or REGISTER (`pbx.sip.refusal.scan_new_request`, or `pbx.sip.peek` for the shapes the scan
  declines) that repeats one answered without a transaction: the same bytes again; one that repeats
  accepted work: to its server transaction (absorbed, or its last response sent again);
- else the guard's verdict: a 503 with Retry-After built from the request's bytes (kept for its
  retransmissions), a drop, or on to the parser (admitted: the stack does not ask the guard again);
- the ACK of a 503 sent here, or of a challenge sent statelessly to an INVITE admitted here (its top Via's
  branch and its source): absorbed (it ends no transaction and no dialog), the challenge forgotten.

While the intake prioritizes (new requests wait for the end of the reactor turn), it asks `ShedScreen.quick`
first when a new INVITE or REGISTER is read: what the guard surely refuses (`OverloadGuard.refuses_new`) is
dealt with there as `screen` would (refused or dropped, its 503 again, a stateless answer again, to its
transaction), and a new exchange the share admits is admitted there (`screen` does not ask the guard again
at the end of the turn); anything else waits for `screen`. While the guard follows completions (a token
bucket decides, `OverloadGuard.admit_rate`), `quick` asks the bucket itself once the request is known to be
a new exchange, and refuses or takes it then: deferring every such request to the end of the turn cost
about 4 us each in-process (bench/refusal_cost.py), about a tenth of a refusal.

Everything else (responses, ACK, requests in dialogs, unusual shapes) goes on to the parser, where the same
decisions are made more slowly. This module knows nothing of the PBX; `pbx.sip.stack.SipStack` owns one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbx.sip.interfaces import IFlow
from pbx.sip.overload import OverloadGuard, Verdict
from pbx.sip.peek import peek_new_request, raw_response
from pbx.sip.refusal import RawRequest, refusal, scan_new_request

if TYPE_CHECKING:
    from pbx.sip.stack import SipStack

STATUS_503 = b"SIP/2.0 503 Service Unavailable\r\n"
_NONE: Any = object()  # no entry


def tag_for(text: str) -> str:
    """The To tag of a response the stack generates itself for a request with this branch (or Call-ID):
    stable per request, so that its retransmissions get the same bytes."""
    return text[-10:].replace(".", "") or "x"


class ShedScreen:
    """The screen of `SipStack` (see the module's doc): `screen(data, flow)` is True when the datagram was
    dealt with; False lets it be parsed.

    Attributes:
        admitted: the flow of the last datagram the guard admitted here (the stack's parser way takes the
            verdict as given for a request from it, and clears this).
        admitted_bytes: with `admitted`, the datagram and source to keep that request's transaction key under
            (`SipStack.by_bytes`) once it is parsed, when the screen did not find it; else None.
    """

    max_acks = 8192
    """INVITEs screened whose ACK may come (`_acks`) kept at most; the oldest are forgotten first."""

    def __init__(self, stack: SipStack) -> None:
        self._stack = stack
        self.admitted: IFlow | None = None
        self.admitted_bytes: tuple[bytes, tuple[str, int]] | None = None
        self._tail: tuple[OverloadGuard, bytes] | None = None  # the guard and its 503's last lines
        # New requests admitted by `quick` when they were read, by (bytes, source), until `_screen` sees them
        # at the end of the reactor turn (it does not ask the guard again).
        self._taken: set[tuple[bytes, tuple[str, int]]] = set()
        # New INVITEs screened here whose non-2xx answer the client ACKs with the INVITE's branch (RFC 3261
        # 17.1.1.3), by (branch, source): None for a refused one (its 503), the stateless key of an admitted
        # one (its challenge may be in the stack's stateless cache). Such an ACK ends nothing else (no
        # transaction, no dialog): it is absorbed from its bytes instead of parsed (`_ack`).
        self._acks: dict[tuple[bytes, tuple[str, int]], tuple[Any, ...] | None] = {}

    def screen(self, data: bytes, flow: IFlow) -> bool:
        """Deal with a UDP datagram before it is parsed, when that is cheaper: only while the guard is
        `shedding` (otherwise the parser's way decides the same for less). Each datagram dealt with here
        counts in the stack's `counters["screened"]` (never also as a parsed message)."""
        self.admitted = None
        self.admitted_bytes = None
        stack = self._stack
        guard = stack.overload
        if guard is None or not guard.shedding or not self._screen(data, flow, guard):
            return False
        stack.counters["screened"] += 1
        return True

    def _screen(self, data: bytes, flow: IFlow, guard: OverloadGuard) -> bool:
        if not data.startswith(guard.starts):
            return data.startswith(b"ACK ") and bool(self._acks) and self._ack(data, flow)
        stack = self._stack
        remote = flow.remote_address
        is_blocked = stack.is_blocked
        if is_blocked is not None and is_blocked(remote[0]):
            return True
        raw_key = (data, remote)
        taken = self._taken
        if taken and raw_key in taken:  # admitted when it was read (`quick`): the guard is not asked again
            taken.discard(raw_key)
            taken_now = True
        else:
            taken_now = False
        seen = stack.by_bytes.get(raw_key)  # a retransmission, byte for byte, of a request screened before
        if seen is not None:
            if type(seen) is bytes:  # refused: its 503 again
                stack.counters["stateless_retransmissions"] += 1
                flow.send(seen)
                return True
            if stack.answered_again(seen, flow) or stack.transactions.absorb_retransmission(seen[:4]):
                return True  # admitted: its stateless answer again, or to its transaction
        credentials = data.find(b"uthorization") >= 0  # as usually written (the scan looks closer)
        if not data.startswith(b"INVITE ") and (taken_now or guard.surely_admits(credentials)):
            # Admitted, so parsed anyway: what the scan finds, only a refusal needs (an INVITE's is kept for
            # its ACK). The parser's way knows a retransmission as it would without overload (stateless
            # answers, transactions) and keeps its key under these bytes (`admitted_bytes`) for the next.
            if not taken_now:
                guard.admit(credentials)
            self.admitted = flow
            self.admitted_bytes = raw_key
            return False
        raw = scan_new_request(data, guard.start_methods)
        if raw is None:  # an unusual shape: `pbx.sip.peek` looks closer
            return self._screen_peeked(data, flow, guard, taken_now)
        method, branch, host, port, rport, credentials = raw[:6]
        if not rport and (port or 5060) != remote[1]:
            if taken_now:
                self.admitted = flow  # asked already: the parser's way does not ask again
            return False  # its answer goes elsewhere than its source (RFC 3261 18.2.2): the parser's way
        key = (branch, host, port, method, remote)
        if stack.answered_again(key, flow):
            return True
        if stack.transactions.absorb_retransmission((branch, host, port, method)):
            return True  # a retransmission of accepted work, never shed: its transaction has it
        verdict = Verdict.ADMIT if taken_now else guard.admit(credentials)
        if verdict is Verdict.ADMIT:
            self.admitted = flow  # asked already: the parser's way does not ask again
            stack.by_bytes.put(raw_key, key)  # its retransmissions go to what becomes of it, unscanned
            if method == "INVITE" and not credentials:
                self._expect_ack(branch, remote, key)
            return False
        self._refuse(raw, data, raw_key, flow, guard, verdict)
        return True

    def quick(self, data: bytes, flow: IFlow) -> bool:
        """The refusal at once of a new INVITE or REGISTER read while the guard sheds (the intake asks this
        for what it would otherwise defer to the end of the reactor turn, `DatagramIntake.refuse`): True
        when it was dealt with as `screen` would (refused or dropped, its 503 again, a blocked source, a
        retransmission of accepted work); False when it goes the regular way (`screen`, later): the guard
        would admit a new exchange now, it may carry credentials, it was admitted before, its shape is
        unusual, or its answer would go elsewhere than its source.

        While the guard follows completions (`OverloadGuard.admit_rate`), a token bucket decides: the guard
        is asked (`admit`, which takes the token) only once the request is known to be new, and one it
        admits is taken as one the share admits is."""
        stack = self._stack
        guard = stack.overload
        if guard is None or b"uthorization" in data:
            return False
        remote = flow.remote_address
        raw_key = (data, remote)
        is_blocked = stack.is_blocked
        following = bool(guard.admit_rate)
        if not following and not guard.refuses_new():
            if (
                guard.surely_admits(False)
                and stack.by_bytes.get(raw_key) is None
                and (is_blocked is None or not is_blocked(remote[0]))
            ):
                # The share admits this new exchange: taken now, so that what is read after it in this turn
                # sees the share used (asked only at the end of the turn, they would all be admitted).
                guard.admit(False)
                self._take(raw_key)
            return False
        counters = stack.counters
        if is_blocked is not None and is_blocked(remote[0]):
            counters["screened"] += 1
            return True
        seen = stack.by_bytes.get(raw_key)
        if seen is not None:
            if type(seen) is not bytes:
                return False  # admitted before: the regular way knows what became of it
            counters["stateless_retransmissions"] += 1
            counters["screened"] += 1
            flow.send(seen)
            return True
        raw = scan_new_request(data, guard.start_methods)
        if raw is None or raw[5]:  # an unusual shape, or credentials after all
            return False
        method, branch, host, port, rport = raw[:5]
        if not rport and (port or 5060) != remote[1]:
            return False
        key = (branch, host, port, method, remote)
        # Answered without a transaction: that again; accepted work: to its transaction; else the verdict.
        if not (stack.answered_again(key, flow) or stack.transactions.absorb_retransmission(key[:4])):
            verdict = guard.admit(False) if following else guard.refuse()  # refuse(): as admit(False) would
            if verdict is Verdict.ADMIT:  # the bucket's token: taken now, `screen` does not ask again
                self._take(raw_key)
                return False
            self._refuse(raw, data, raw_key, flow, guard, verdict)
        counters["screened"] += 1
        return True

    def _take(self, raw_key: tuple[bytes, tuple[str, int]]) -> None:
        """Note a new request admitted when it was read, for `screen` at the end of the turn."""
        taken = self._taken
        if len(taken) >= self.max_acks:
            taken.clear()
        taken.add(raw_key)

    def _refuse(
        self, raw: RawRequest, data: bytes, raw_key: Any, flow: IFlow, guard: OverloadGuard, verdict: Verdict
    ) -> None:
        """Answer a new request the guard refused (`verdict`: REJECT, or DROP for nothing) from its bytes."""
        stack = self._stack
        stack.counters["shed"] += 1
        if verdict is Verdict.REJECT:
            tail = self._tail
            if tail is None or tail[0] is not guard:
                tail = self._tail = (guard, self._refusal_tail(guard))
            branch = raw[1]
            answer = refusal(raw, data, STATUS_503, (branch[-10:].replace(".", "") or "x").encode(), tail[1])
            flow.send(answer)
            stack.by_bytes.put(raw_key, answer)  # by its bytes only: a different copy gets the same 503 anew
            if raw[0] == "INVITE":
                self._expect_ack(branch, raw_key[1], None)

    def _expect_ack(self, branch: str, remote: tuple[str, int], key: tuple[Any, ...] | None) -> None:
        acks = self._acks
        if len(acks) >= self.max_acks:
            del acks[next(iter(acks))]
        acks[(branch.encode(), remote)] = key

    def _ack(self, data: bytes, flow: IFlow) -> bool:
        """Absorb the ACK of a non-2xx answer to an INVITE screened here (its branch and source, RFC 3261
        17.1.1.3): the ACK of a 503 ends nothing; that of a challenge sent statelessly forgets it (as
        `SipStack.ack_received` would). False for anything else (the top Via not written `Via: `, another
        branch, a challenge not in the stateless cache: the parser's way)."""
        via = data.find(b"\r\nVia: ")
        if via < 0:
            return False
        end = data.find(b"\r\n", via + 7)
        at = data.find(b";branch=", via, end)
        if at < 0:
            return False
        at += 8
        stop = data.find(b";", at, end)
        branch = data[at : stop if stop >= 0 else end]
        key = self._acks.pop((branch, flow.remote_address), _NONE)
        if key is _NONE:
            return False
        if key is not None:  # an admitted INVITE: its challenge, if it was answered statelessly
            cache = self._stack.stateless_cache
            if cache.get(key) is None:
                return False  # answered by a transaction (or forgotten): the parser's way
            cache.discard(key)
        return True

    def _refusal_tail(self, guard: OverloadGuard) -> bytes:
        """The 503's header lines after CSeq (Retry-After, Server, Content-Length) and the blank line."""
        server = self._stack.user_agent
        return f"Retry-After: {guard.retry_after}\r\nServer: {server}\r\nContent-Length: 0\r\n\r\n".encode()

    def _screen_peeked(self, data: bytes, flow: IFlow, guard: OverloadGuard, taken: bool = False) -> bool:
        """`_screen` for a request `pbx.sip.refusal` does not take (folded lines, IPv6, odd spacing ...);
        `taken`: admitted when it was read."""
        peeked = peek_new_request(data, guard.starts)
        if peeked is None:
            if taken:
                self.admitted = flow  # asked already: the parser's way does not ask again
            return False
        stack = self._stack
        is_blocked = stack.is_blocked
        if is_blocked is not None and is_blocked(flow.remote_address[0]):
            return True
        key = (peeked.branch, peeked.host.lower(), peeked.port, peeked.method, flow.remote_address)
        if stack.answered_again(key, flow):
            return True
        if stack.transactions.absorb_retransmission(peeked.transaction_key):
            return True  # a retransmission of accepted work, never shed: its transaction has it
        verdict = Verdict.ADMIT if taken else guard.admit(peeked.credentials)
        if verdict is Verdict.ADMIT:
            self.admitted = flow  # asked already: the parser's way does not ask again
            return False
        stack.counters["shed"] += 1
        if verdict is Verdict.REJECT:
            extra = f"Retry-After: {guard.retry_after}\r\nServer: {stack.user_agent}\r\n".encode()
            answer = raw_response(peeked, b"SIP/2.0 503 Service Unavailable", tag_for(peeked.branch), extra)
            flow.send(answer)
            stack.stateless_cache.put(key, answer)
        return True
