"""A bare Twisted UDP responder: the ceiling a Python SIP server on Twisted can reach on this machine.

Every request gets a canned `200 OK` that copies only the Via, From, To, Call-ID and CSeq lines (so that SIPp
can match it) and adds a fixed Allow; there is no parsing, no validation, no transaction state. Responses
(start line `SIP/2.0`) and keep-alives are ignored. It is the baseline of `bench/options_bench.py`:

    python bench/bare_responder.py --port 5070

Prints "bare responder listening on HOST port N" once bound; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet.protocol import DatagramProtocol

_COPIED = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:", b"v:", b"f:", b"t:", b"i:")
_TAIL = b"\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nServer: bare\r\nContent-Length: 0\r\n\r\n"


class BareResponder(DatagramProtocol):
    """Answer every request datagram with a canned 200."""

    noisy = False

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if datagram.startswith(b"SIP/2.0") or not datagram.strip(b"\r\n"):
            return
        lines = datagram.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        copied = [line for line in lines[1:] if line[:8].lower().startswith(_COPIED)]
        self.transport.write(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copied) + _TAIL, addr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="UDP port")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    port = reactor.listenUDP(args.port, BareResponder(), interface=args.host, maxPacketSize=65535)
    print(f"bare responder listening on {args.host} port {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
