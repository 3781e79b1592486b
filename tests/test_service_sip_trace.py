"""`--sip-trace` never logs SRTP keys: the `inline:` key material of `a=crypto` lines is masked."""

from __future__ import annotations

import base64

from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from pbx.service.sip import sip_trace


class _Flow:
    remote_address = ("127.0.0.1", 5061)


def test_trace_masks_crypto_keys() -> None:
    key = base64.b64encode(bytes(range(30))).decode()
    message = (
        "INVITE sip:100@pbx SIP/2.0\r\nContent-Type: application/sdp\r\n\r\n"
        "v=0\r\nm=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    ).encode()
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        sip_trace("recv", "TLS", _Flow(), message)  # type: ignore[arg-type]
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = "".join(formatEvent(e) for e in events if e.get("log_namespace") == "pbx.sip.trace")
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***" in text
    assert key not in text and key[:12] not in text
