"""Verified TLS to and from peers (issue 13 item 2), with `twistd pbx` as a subprocess on loopback.

A test CA and certificates are made here with `cryptography`. Each carrier is a small TLS registrar in a
thread of the test process (the standard `ssl` module; it answers every REGISTER with 200) presenting one
certificate; one PBX has a trunk registering over TLS to each:

Trunk hosts NAME.example.test resolve through a `twisted.names` server (`sip.nameservers`) to 127.0.0.1, so
the name checked is the DNS-ID RFC 3263 started from (RFC 5922); two trunks use 127.0.0.1 (IP-ID):

- `good`: signed by the CA for good.example.test: registered.
- `wrong`: signed by the CA for other.example.test: failed, "name mismatch ... DNS-ID" logged.
- `unknown`: signed by another CA: failed, "unknown CA" logged.
- `expired`: signed by the CA, expired yesterday: failed, "certificate has expired" logged.
- `ip` / `ipwrong`: a certificate for IP 127.0.0.1 registers; one for 127.0.0.2 and localhost fails (IP-ID).
- `mutual`: the carrier requires a client certificate; the trunk has one (signed by the CA): registered.
- `nocert`: the carrier requires a client certificate; the trunk has none: failed, "certificate required"
  logged (over TLS 1.3 the carrier refuses after the client's side of the handshake completed: the
  REGISTER times out).

The PBX's own TLS listeners then face `openssl s_client`: TLS 1.1 is refused, TLS 1.2 with CBC suites only
is refused, TLS 1.2 negotiates an ECDHE AEAD suite; a listener with `require_client_certificate` refuses a
client without a certificate and accepts one with a certificate signed by `[tls] ca_certificates`.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, PbxProcess, free_port, write_config
from tests.e2e.test_trunk_registration_sipp import carrier_trunk, trunk_status
from tests.sip.tls_certs import issue, make_ca

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

# -- a TLS carrier -----------------------------------------------------------------------------------


def _answer(request: bytes) -> bytes:
    """200 OK to a REGISTER (or OPTIONS): Via, From, To (with a tag), Call-ID, CSeq and Contact echoed."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = ["SIP/2.0 200 OK"]
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            lines.append(line)
        elif name in ("to", "t"):
            lines.append(line if ";tag=" in line else line + ";tag=carrier")
        elif name in ("contact", "m"):
            lines.append(line + ";expires=60")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class Carrier:
    """A TLS registrar on 127.0.0.1 in a thread: answers 200 to each request; counts them."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.requests = 0
        self.handshake_errors: list[str] = []
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                buffer = b""
                while not self._stopping.is_set():
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buffer += data
                    while b"\r\n\r\n" in buffer:
                        head, buffer = buffer.split(b"\r\n\r\n", 1)
                        match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                        buffer = buffer[int(match.group(1)) if match else 0 :]
                        if head.strip():
                            self.requests += 1
                            conn.sendall(_answer(head + b"\r\n\r\n"))
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(str(e))
        finally:
            raw.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(6)


# -- the test ----------------------------------------------------------------------------------------


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`openssl s_client` to 127.0.0.1:PORT; its combined output is checked by the caller."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
    )


def negotiated(result: subprocess.CompletedProcess[str]) -> str | None:
    """The cipher s_client negotiated, or None when the handshake failed (s_client prints the session it
    was building even when the server's alert ends it, so its exit code and alerts count too)."""
    match = re.search(r"Cipher is (\S+)", result.stdout)
    if match is None or match.group(1) == "(NONE)" or result.returncode != 0 or "alert" in result.stderr:
        return None
    return match.group(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One PBX, its carriers and DNS server for both tests (a PBX start costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("tls-verify")
    ca = make_ca(tmp_path, "test-ca")
    other_ca = make_ca(tmp_path, "other-ca")
    carriers = {
        # DNS-IDs: the trunk's host NAME.example.test resolves (the test's DNS server) to 127.0.0.1.
        "good": Carrier(*issue(tmp_path, "good", ca, ["good.example.test"])),
        "wrong": Carrier(*issue(tmp_path, "wrong", ca, ["other.example.test"])),
        "unknown": Carrier(*issue(tmp_path, "unknown", other_ca, ["unknown.example.test"])),
        "expired": Carrier(*issue(tmp_path, "expired", ca, ["expired.example.test"], expired=True)),
        "mutual": Carrier(*issue(tmp_path, "mutual", ca, ["mutual.example.test"]), client_ca=ca[2]),
        "nocert": Carrier(*issue(tmp_path, "nocert", ca, ["nocert.example.test"]), client_ca=ca[2]),
        # IP-IDs: the trunk's host is 127.0.0.1.
        "ip": Carrier(*issue(tmp_path, "ip", ca, ["127.0.0.1"])),
        "ipwrong": Carrier(*issue(tmp_path, "ipwrong", ca, ["127.0.0.2", "localhost"])),
    }
    client_cert, client_key = issue(tmp_path, "pbx-client", ca, ["pbx.example.test"], client=True)
    trunks = ""
    for name, carrier in carriers.items():
        extra: dict[str, object] = {"transport": "tls", "retry_interval": 30, "contact_user": f"pbx-{name}"}
        if not name.startswith("ip"):
            extra["host"] = f"{name}.example.test"
        if name == "mutual":
            extra.update(tls_certificate=str(client_cert), tls_private_key=str(client_key))
        trunks += carrier_trunk(carrier.port, name, **extra) + "\n"
    dns_port = free_port()
    zone = {f"{name}.example.test": [["A", "127.0.0.1"]] for name in carriers}
    dns = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.dns_server", str(dns_port), json.dumps(zone)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert dns.stdout is not None and dns.stdout.readline().strip() == b"ready"
    ports = write_config(tmp_path, ipv6=False, extra=trunks)
    mutual_port = free_port(udp=False)
    config: Path = ports["path"]
    text = config.read_text()
    text = text.replace(
        "[[sip.listen]]",
        f'[tls]\nca_certificates = "{ca[2]}"\n\n[sip]\nt1 = 0.05\nnameservers = ["127.0.0.1:{dns_port}"]\n\n'
        f'[[sip.listen]]\ntransport = "tls"\nhost = "127.0.0.1"\nport = {mutual_port}\n'
        "require_client_certificate = true\n\n[[sip.listen]]",
        1,
    )
    config.write_text(text)
    pbx = PbxProcess(config)
    try:
        pbx.wait_ready(ports["listeners"] + 1)
        yield {
            "pbx": pbx,
            "config": config,
            "carriers": carriers,
            "tls": ports["tls"],
            "mutual": mutual_port,
            "client": (client_cert, client_key),
        }
    finally:
        pbx.stop()
        dns.kill()
        dns.wait(10)
        for carrier in carriers.values():
            carrier.stop()


def test_trunks_verify_the_carrier_certificate(world: dict) -> None:
    config, pbx, carriers = world["config"], world["pbx"], world["carriers"]
    for name in ("good", "mutual", "ip"):
        trunk_status(config, f"default/{name}", "registered")
    refused = ("wrong", "unknown", "expired", "nocert", "ipwrong")
    for name in refused:
        words, _ = trunk_status(config, f"default/{name}", "failed")
        # Each fails at once as a transport error (503), not by Timer F (408): nocert too, whose TLS 1.3
        # carrier breaks the connection only after the REGISTER went out (StreamFlow.watch).
        assert "408" not in words, words

    def logged(name: str, why: str) -> None:
        pbx.wait_for(rf"TLS connection to 127\.0\.0\.1:{carriers[name].port} failed: {why}")

    logged("wrong", r"TLS certificate name mismatch: .*DNS-ID wrong\.example\.test")
    logged("ipwrong", r"TLS certificate name mismatch: .*IP-ID 127\.0\.0\.1")
    logged("unknown", r"TLS handshake failed: certificate verify failed: .*unknown CA")
    logged("expired", r"TLS handshake failed: certificate verify failed: certificate has expired")
    # Over TLS 1.3 the carrier wanting a client certificate ends the connection after the PBX's handshake.
    pbx.wait_for(
        rf"TLS connection with 127\.0\.0\.1:{carriers['nocert'].port} closed: .*certificate required"
    )
    assert all(carriers[name].requests >= 1 for name in ("good", "mutual", "ip"))
    assert all(carriers[name].requests == 0 for name in refused)
    assert any("certificate" in error.lower() for error in carriers["nocert"].handshake_errors)
    assert "Traceback" not in pbx.output


def test_listener_policy_and_client_certificates(world: dict) -> None:
    port, mutual = world["tls"], world["mutual"]
    # TLS 1.1 is refused even by a client willing to use it (OpenSSL's security level lowered for it).
    old = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert negotiated(old) is None, old.stdout
    # TLS 1.2 with CBC suites only: no shared cipher.
    cbc = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA256")
    assert negotiated(cbc) is None, cbc.stdout
    # TLS 1.2 as offered by OpenSSL: an ECDHE AEAD suite.
    modern = s_client(port, "-tls1_2")
    cipher = negotiated(modern)
    assert cipher is not None and cipher.startswith("ECDHE-") and re.search("GCM|CHACHA20", cipher), (
        modern.stdout
    )
    # require_client_certificate: refused without one, accepted with one the CA signed.
    anonymous = s_client(mutual, "-tls1_2")
    assert negotiated(anonymous) is None, anonymous.stdout
    cert, key = world["client"]
    signed = s_client(mutual, "-tls1_2", "-cert", str(cert), "-key", str(key))
    assert negotiated(signed) is not None, signed.stdout + signed.stderr
