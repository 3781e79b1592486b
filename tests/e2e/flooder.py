"""A bounded UDP flood from one loopback source, run as its own process (`python -m tests.e2e.flooder`).

Kinds: `register` (unauthenticated REGISTERs, a fresh Call-ID and branch from a pool of 512 so they are new
requests, not retransmissions), `invite-bad-auth` (INVITEs whose Proxy-Authorization answers no challenge:
each is a failed authentication) and `options`. Paced to `--rate` per second in 1 ms slices, stopped after
`--seconds` or `rate * seconds` datagrams, whichever comes first. Prints one JSON line:
{"sent": N, "errors": N, "seconds": S, "rate": R, "started": T} (`started`: time.time() of the first send).
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def datagrams(kind: str, source: str, target: str, port: int, count: int = 512) -> list[bytes]:
    """`count` distinct requests of `kind` from `source` to `target:port`."""
    found = []
    for n in range(count):
        branch = f"z9hG4bKflood{n:06d}"
        common = (
            f"Via: SIP/2.0/UDP {source}:5999;branch={branch};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{1000 + n % 4}@{target}>;tag=f{n}\r\nCall-ID: flood-{n}@{source}\r\n"
        )
        if kind == "register":
            text = (
                f"REGISTER sip:{target}:{port} SIP/2.0\r\n{common}To: <sip:{1000 + n % 4}@{target}>\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:{1000 + n % 4}@{source}:5999>\r\nExpires: 600\r\n"
                "User-Agent: flood\r\nContent-Length: 0\r\n\r\n"
            )
        elif kind == "invite-bad-auth":
            text = (
                f"INVITE sip:1002@{target}:{port} SIP/2.0\r\n{common}To: <sip:1002@{target}>\r\n"
                f"CSeq: 2 INVITE\r\nContact: <sip:1000@{source}:5999>\r\n"
                f'Proxy-Authorization: Digest username="1000", realm="localhost", nonce="bogus{n}", '
                f'uri="sip:1002@{target}", response="00000000000000000000000000000000"\r\n'
                "User-Agent: flood\r\nContent-Length: 0\r\n\r\n"
            )
        elif kind == "options":
            text = (
                f"OPTIONS sip:{target}:{port} SIP/2.0\r\n{common}To: <sip:{target}>\r\n"
                "CSeq: 1 OPTIONS\r\nUser-Agent: flood\r\nContent-Length: 0\r\n\r\n"
            )
        else:
            raise ValueError(kind)
        found.append(text.encode())
    return found


def flood(kind: str, source: str, target: str, port: int, rate: float, seconds: float) -> dict[str, float]:
    pool = datagrams(kind, source, target, port)
    total = int(rate * seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sendto, address, size = sock.sendto, (target, port), len(pool)
    sent = errors = 0
    started_wall = time.time()
    start = time.monotonic()
    deadline = start + seconds + 1.0
    while sent < total:
        now = time.monotonic()
        if now > deadline:
            break
        due = min(total, int((now - start) * rate) + 1)
        if sent >= due:
            time.sleep(0.001)
            continue
        while sent < due:  # the slice's datagrams, back to back
            try:
                sendto(pool[sent % size], address)
            except OSError:
                errors += 1
            sent += 1
    elapsed = time.monotonic() - start
    sock.close()
    return {
        "sent": sent,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rate": round(sent / elapsed, 1) if elapsed else 0.0,
        "started": started_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", default="register", choices=["register", "invite-bad-auth", "options"])
    parser.add_argument("--source", default="127.0.0.3")
    parser.add_argument("--target", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=12000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(
        json.dumps(flood(args.kind, args.source, args.target, args.port, args.rate, args.seconds)), flush=True
    )


if __name__ == "__main__":
    main()
