"""`pbx.service.calls`: `[media] relay = "rtpengine"` builds an `RtpengineRelay` whose ng client listens on an
ephemeral port of the loopback (or wildcard) address of rtpengine's family; stopping the calls service
deletes rtpengine's calls before the client and its port close."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.rtpengine import RtpengineRelay
from pbx.service.calls import CallsService, build_rtpengine
from tests.media.ngfakes import FakeNgServer


class _Reactor(Clock):
    """A clock that records `listenUDP` (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> None:
        self.udp.append((port, protocol, interface))


class _B2BUA:
    def __init__(self, bridge_relay: Any) -> None:
        self.bridge_relay = bridge_relay
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class _Relay:
    def close(self) -> Any:
        return succeed(None)


class BuildTests(SynchronousTestCase):
    def test_client_listens_on_loopback_for_a_loopback_engine(self) -> None:
        cases = {
            "127.0.0.1:2223": ("127.0.0.1", ("127.0.0.1", 2223)),
            "[::1]:2223": ("::1", ("::1", 2223)),
            "10.0.0.5:22222": ("0.0.0.0", ("10.0.0.5", 22222)),
            "[2001:db8::1]:9": ("::", ("2001:db8::1", 9)),
        }
        for address, (interface, ng) in cases.items():
            reactor = _Reactor()
            relay = build_rtpengine(address, reactor)
            self.assertIsInstance(relay, RtpengineRelay)
            ((port, protocol, listened),) = reactor.udp
            self.assertEqual((port, listened), (0, interface))
            self.assertIs(protocol, relay.client)
            self.assertEqual(relay.client.address, ng)


class StopTests(SynchronousTestCase):
    def test_stop_deletes_the_calls_then_closes_the_client(self) -> None:
        reactor = _Reactor()
        relay = build_rtpengine("127.0.0.1:2223", reactor)
        server = FakeNgServer(relay.client)
        relay.create_session("c1")
        calls = CallsService(_B2BUA(relay), _Relay())  # type: ignore[arg-type]
        calls.startService()
        self.successResultOf(calls.stopService())
        self.assertEqual(server.calls, {})
        self.assertEqual(len(server.commands("delete")), 1)
        self.assertEqual(
            self.failureResultOf(relay.client.request({"command": "ping"})).value.reason, "ng client closed"
        )
        self.assertEqual(reactor.getDelayedCalls(), [])
