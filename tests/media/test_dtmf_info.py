"""Tests for `pbx.media.dtmf.parse_dtmf_info`: SIP INFO bodies (application/dtmf-relay, application/dtmf)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pbx.media.dtmf import DIGITS, parse_dtmf_info


class ParseDtmfInfoTests(SynchronousTestCase):
    def test_dtmf_relay(self) -> None:
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n"), "1")
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", "Signal= #\nDuration= 250"), "#")
        self.assertEqual(parse_dtmf_info("Application/DTMF-Relay; charset=utf-8", b"signal=*\r\n"), "*")
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Duration=160\r\nSignal=d\r\n"), "D")

    def test_event_codes(self) -> None:
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Signal=10\r\n"), "*")
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Signal=11\r\n"), "#")
        self.assertIsNone(parse_dtmf_info("application/dtmf-relay", b"Signal=16\r\n"))

    def test_dtmf(self) -> None:
        self.assertEqual(parse_dtmf_info("application/dtmf", b"5"), "5")
        self.assertEqual(parse_dtmf_info("application/dtmf", b"#\r\n"), "#")
        self.assertEqual(parse_dtmf_info("application/dtmf", b"Signal=7"), "7")

    def test_not_dtmf(self) -> None:
        self.assertIsNone(parse_dtmf_info("application/sdp", b"Signal=1"))
        self.assertIsNone(parse_dtmf_info("application/dtmf-relay", b""))
        self.assertIsNone(parse_dtmf_info("application/dtmf-relay", b"1"))
        self.assertIsNone(parse_dtmf_info("application/dtmf", b"123"))
        self.assertIsNone(parse_dtmf_info("application/dtmf-relay", b"Signal=x"))

    @given(st.sampled_from(DIGITS), st.integers(0, 5000))
    def test_round_trip(self, digit: str, duration: int) -> None:
        body = f"Signal={digit}\r\nDuration={duration}\r\n".encode()
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", body), digit)

    @given(st.text(max_size=40), st.sampled_from(["application/dtmf", "application/dtmf-relay"]))
    def test_never_raises(self, body: str, content_type: str) -> None:
        result = parse_dtmf_info(content_type, body)
        self.assertTrue(result is None or result in DIGITS)
