"""A media endpoint on a real UDP port pair (`pbx.media.udp.UdpRtpTransport`) talking to another one over
loopback with the real reactor: a prompt arrives paced, digits and RTCP go the other way."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from pbx.media.endpoint import MediaEngine
from pbx.media.interfaces import IRtpTransport
from pbx.media.ports import PortPool
from pbx.media.udp import UdpRtpTransport
from tests.media.mediafakes import make_prompt_dir


class UdpEndpointTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.tmp = tempfile.mkdtemp()
        self.prompts = make_prompt_dir(os.path.join(self.tmp, "sounds"))
        self.engine = MediaEngine(reactor, self.prompts)  # type: ignore[arg-type]
        self.pool = PortPool(21000, 21999)

    @defer.inlineCallbacks
    def test_prompt_and_digit_over_loopback(self) -> defer.Generator[Deferred[object], object, None]:
        pbx = UdpRtpTransport.open(self.reactor, self.pool, "127.0.0.1")  # type: ignore[arg-type]
        phone = UdpRtpTransport.open(self.reactor, self.pool, "127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(pbx.close)
        self.addCleanup(phone.close)
        pbx.set_remote("127.0.0.1", phone.port)
        phone.set_remote("127.0.0.1", pbx.port)
        self.assertTrue(IRtpTransport.providedBy(pbx))
        ivr = self.engine.create_endpoint(pbx)
        caller = self.engine.create_endpoint(phone)
        pbx.consumer, phone.consumer = ivr, caller
        self.addCleanup(self.engine.close)
        yield ivr.play(["welcome"])
        # wait for the last packet to cross loopback
        for _ in range(100):
            if caller.stats().packets_received >= 25:
                break
            yield task.deferLater(self.reactor, 0.01, lambda: None)
        self.assertEqual(caller.stats().packets_received, 25)
        self.assertEqual(caller.stats().lost, 0)
        digit = ivr.collect(1, timeout=5.0)
        yield caller.send_digits("9")
        self.assertEqual((yield digit), "9")
        self.assertEqual(ivr.stats().digits["rfc4733"], 1)


class ThreadWriterTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_recording_written_in_a_thread(self) -> defer.Generator[Deferred[object], object, None]:
        from twisted.internet import reactor

        from pbx.media.recorder import thread_writer
        from pbx.media.wav import read_pcm

        path = os.path.join(tempfile.mkdtemp(), "x.wav")
        yield thread_writer(reactor)(path, b"\x01\x00" * 800)  # type: ignore[arg-type]
        self.assertEqual(read_pcm(path), (8000, 1, 2, b"\x01\x00" * 800))
