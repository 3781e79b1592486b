"""rtpengine's own media on a call (`play media`, `stop media`, `play DTMF`): on the fake ng server, what
each `RtpengineLeg` method sends (the party tag, the file, the digit) and refuses; music on hold on such a leg
(`pbx.apps.moh.RemoteMusic`); then against Debian's rtpengine (when installed): a file played to leg "a"'s
phone reaches it, a digit sent to leg "b"'s phone arrives there as RFC 4733 events."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbx.apps.moh import REMOTE_REPEATS, MusicOnHold, RemoteMusic
from pbx.media.ng import NgClient, NgError
from pbx.media.rtpengine import RtpengineRelay
from tests.media.test_rtpengine import relay

reactor: Any = _reactor


class PlayTests(SynchronousTestCase):
    def test_play_and_stop_media_to_a_legs_phone(self) -> None:
        r, server, _ = relay()
        session = r.create_session("c")
        leg = session.leg("b")
        self.assertEqual(self.successResultOf(leg.play_media("/srv/moh.wav", 3)), 2000)
        (play,) = server.commands("play media")
        self.assertEqual(
            (play[b"from-tag"], play[b"file"], play[b"repeat-times"], play[b"call-id"]),
            (b"b", b"/srv/moh.wav", 3, session.ng_call_id.encode()),
        )
        self.assertIsNone(self.successResultOf(leg.stop_media()))
        self.assertEqual(server.commands("stop media")[0][b"from-tag"], b"b")
        with self.assertRaises(ValueError):
            leg.play_media("/srv/moh.wav", 0)

    def test_a_digit_to_a_legs_phone_comes_from_the_other_party(self) -> None:
        r, server, _ = relay()
        session = r.create_session("c")
        self.assertIsNone(self.successResultOf(session.leg("b").play_dtmf("5")))
        self.assertIsNone(self.successResultOf(session.leg("a").play_dtmf("#", 400)))
        sent = [(c[b"from-tag"], c[b"code"], c[b"duration"]) for c in server.commands("play DTMF")]
        self.assertEqual(sent, [(b"a", b"5", 250), (b"b", b"#", 400)])
        for digit, duration in (("55", 250), ("x", 250), ("1", 99), ("1", 5001)):
            with self.assertRaises(ValueError):
                session.leg("a").play_dtmf(digit, duration)

    def test_inject_dtmf_marks_every_offer_and_answer(self) -> None:
        clock_relay, server, _ = relay()
        marked = RtpengineRelay(clock_relay.client, inject_dtmf=True)
        marked.create_session("m")
        clock_relay.create_session("p")
        flags = {c[b"call-id"][:1]: c[b"flags"] for c in server.commands("offer") + server.commands("answer")}
        self.assertIn(b"inject DTMF", flags[b"m"])
        self.assertNotIn(b"inject DTMF", flags[b"p"])

    def test_closed_or_unready_calls_refuse(self) -> None:
        r, server, _ = relay(auto=False)
        session = r.create_session("c")
        self.failureResultOf(session.leg("a").play_media("/x.wav"), NgError)
        server.deliver()
        server.deliver()
        server.deliver()
        session.close()
        self.failureResultOf(session.leg("a").play_dtmf("1"), NgError)
        self.failureResultOf(session.leg("a").stop_media(), NgError)


class FakePlayingLeg:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def play_media(self, path: str, repeat: int = 1) -> Deferred[int | None]:
        self.calls.append(("play", path, str(repeat)))
        return succeed(1000)

    def stop_media(self) -> Deferred[None]:
        self.calls.append(("stop",))
        return succeed(None)


class RemoteMusicTests(SynchronousTestCase):
    def test_music_on_hold_on_a_leg_that_plays_files_itself(self) -> None:
        tmp = Path(self.mktemp())
        (tmp / "acme" / "sounds").mkdir(parents=True)
        (tmp / "acme" / "sounds" / "moh.wav").write_bytes(b"RIFF")

        class Engine:
            class prompts:  # the engine's attribute
                @staticmethod
                def path_of(name: str) -> str:
                    return f"/usr/share/pbx/sounds/{name}.wav"

        music = MusicOnHold(Engine(), tmp)
        leg = FakePlayingLeg()
        endpoint = music.start("acme", leg, b"")
        self.assertIsInstance(endpoint, RemoteMusic)
        self.assertEqual(
            leg.calls, [("play", str((tmp / "acme/sounds/moh.wav").resolve()), str(REMOTE_REPEATS))]
        )
        endpoint.close()
        endpoint.close()
        self.assertEqual(leg.calls[1:], [("stop",)])
        other = FakePlayingLeg()
        music.start("default", other, b"")
        self.assertEqual(other.calls, [("play", "/usr/share/pbx/sounds/moh.wav", str(REMOTE_REPEATS))])


# -- against Debian's rtpengine ---------------------------------------------------------------------------


class Phone(DatagramProtocol):
    """A phone's RTP socket: counts what arrives by payload type."""

    def __init__(self) -> None:
        self.received: dict[int, int] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12:
            pt = data[1] & 0x7F
            self.received[pt] = self.received.get(pt, 0) + 1


@pytest.mark.skipif(not os.path.exists("/usr/bin/rtpengine"), reason="rtpengine-daemon not installed")
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
class RealRtpengineTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        from tests.e2e.harness import free_port
        from tests.e2e.test_calls_sipp import rtp_range

        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)
        ng = free_port(tcp=False)
        low, high = rtp_range(20)
        self.engine = subprocess.Popen(
            [
                "/usr/bin/rtpengine", "--config-file=none",
                "--table=-1", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}",
                "--foreground", "--log-stderr", f"--port-min={low}", f"--port-max={high}",
                "--num-threads=1", "--delete-delay=0", f"--pidfile={self.dir / 'rtpengine.pid'}",
            ],
            stdout=(self.dir / "rtpengine.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.addCleanup(self._stop_engine)
        self.wav = self.dir / "moh.wav"
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(self.wav), "synth", "10", "sine", "440"],
            check=True,
        )
        self.client = NgClient(reactor, ("127.0.0.1", ng), interval=0.2, timeout=5)
        port = reactor.listenUDP(0, self.client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

    def _stop_engine(self) -> None:
        self.engine.terminate()
        self.engine.wait(10)

    async def wait_for(self, condition: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline, "timed out")
            await deferLater(reactor, 0.05, lambda: None)  # polling the phones' counters for packets

    async def test_a_file_reaches_one_phone_and_a_digit_the_other(self) -> None:
        r = RtpengineRelay(self.client, inject_dtmf=True)
        await self.wait_for_pong(r)
        session = r.create_session("play-test")
        await session.ready
        phones = {name: Phone() for name in "ab"}
        ports = {name: reactor.listenUDP(0, phone, interface="127.0.0.1") for name, phone in phones.items()}
        for name, port in ports.items():
            self.addCleanup(port.stopListening)
            session.leg(name).set_remote("127.0.0.1", port.getHost().port)
        seq = [0]

        def speak() -> None:  # both phones send silence (u-law), 20 ms packets: the streams rtpengine has
            seq[0] += 1
            for i, name in enumerate("ab"):
                header = bytes([0x80, 0]) + seq[0].to_bytes(2, "big") + (seq[0] * 160).to_bytes(4, "big")
                ports[name].write(
                    header + bytes([0, 0, 0, i + 1]) + b"\xff" * 160,
                    ("127.0.0.1", session.leg(name).local_port),
                )

        talk = LoopingCall(speak)
        talk.start(0.02)
        self.addCleanup(lambda: talk.running and talk.stop())
        await self.wait_for(
            lambda: phones["a"].received.get(0, 0) > 20 and phones["b"].received.get(0, 0) > 20
        )
        before = dict(phones["a"].received)
        self.assertEqual(await session.leg("a").play_media(str(self.wav)), 10000)
        await deferLater(reactor, 1.0, lambda: None)  # a second of playback on top of b's audio
        played = phones["a"].received.get(0, 0) - before.get(0, 0)
        self.assertGreater(played, 60, phones)  # ~50 relayed + ~50 played
        await session.leg("a").stop_media()
        self.assertEqual(phones["b"].received.get(101, 0), 0)
        await session.leg("b").play_dtmf("5", 200)
        await self.wait_for(lambda: phones["b"].received.get(101, 0) >= 3)
        self.assertEqual(phones["a"].received.get(101, 0), 0)
        talk.stop()
        await session.close()

    async def wait_for_pong(self, r: RtpengineRelay) -> None:
        for _ in range(50):
            try:
                await r.ping()
                return
            except NgError:
                await deferLater(reactor, 0.1, lambda: None)  # rtpengine is starting
        self.fail("rtpengine did not answer ping")
