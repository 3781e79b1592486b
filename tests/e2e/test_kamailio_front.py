"""Kamailio in front of two PBX nodes on one PostgreSQL (issue 17, item 2), end to end with SIPp and baresip.

The shipped `deploy/kamailio/kamailio.cfg` runs as is, its settings given as `-A` defines (a free loopback
port, the test's dispatcher.list, a one-second health check). Two `twistd -n pbx` nodes share the tests'
PostgreSQL (tests/store/postgres_server.py) and trust the proxy (`[security] trusted_proxies`).

The SIPp test walks the whole path: a phone "behind NAT" (its Contact names an address it does not send
from) registers twice through Kamailio, both times on the same node, which gets a Path with the phone's real
flow; a second phone calls it through Kamailio and the call connects on one node, its ACK and BYE going
through the proxy to that same node; that node is stopped with SIGTERM while the call is up (it drains: 503
to the proxy's OPTIONS), Kamailio's health check takes it out, a new call lands on the other node, and the
first call still ends normally; started again, the node is put back by the next health check; a node killed
outright is taken out as well. The baresip test has two real phones registered through Kamailio hear each
other's tone.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.audio import assert_hears, read_wav
from tests.e2e.baresip import TonePhones
from tests.e2e.harness import REPO, PbxProcess, free_port
from tests.e2e.kamailio import kamailio_binary, modules_dir
from tests.e2e.test_calls_baresip import CALLEE_TONE, CALLER_TONE, HEARD_SECONDS, heard_dump, wait_heard
from tests.e2e.test_calls_sipp import CallPbx, Sipp, SippSet, StartPbx, header, sipp, start_pbx  # noqa: F401 - fixtures
from tests.store import postgres_server

CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
NAT_CONTACT = "127.0.0.9:5999"  # where the callee believes it is; nothing listens there

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_server.unavailable() is not None, reason=postgres_server.unavailable() or ""),
]


def _kamailio_missing() -> bool:
    try:
        kamailio_binary()
    except FileNotFoundError:
        return True
    return False


class Front:
    """The shipped kamailio.cfg run in the foreground on 127.0.0.1:`port`, dispatching to `nodes`."""

    def __init__(self, directory: Path, nodes: Sequence[int]) -> None:
        directory.mkdir()
        self.port = free_port(tcp=False)
        self.ctl = directory / "kamailio_ctl"
        self.log_file = directory / "kamailio.log"
        (directory / "dispatcher.list").write_text("".join(f"1 sip:127.0.0.1:{port}\n" for port in nodes))
        command = [
            kamailio_binary(), "-f", str(CONFIG), "-DD", "-E", "-L", modules_dir(),
            "-Y", str(directory), "-P", str(directory / "kamailio.pid"), "-m", "64", "-M", "8",
            "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
            "-A", f'DISPATCHER_LIST="{directory / "dispatcher.list"}"',
            "-A", "PING_INTERVAL=1",
            "-A", f'CTL_SOCKET="unix:{self.ctl}"',
        ]  # fmt: skip
        self._log = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, cwd=directory, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_listening(self, timeout: float = 15.0) -> None:
        """Until the UDP port is bound and the control socket is there (every process started)."""
        wanted = f"0100007F:{self.port:04X}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open("/proc/net/udp") as table:
                bound = any(line.split()[1] == wanted for line in table.readlines()[1:])
            if bound and self.ctl.exists():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)  # polling /proc/net/udp for an event: the bind
        raise AssertionError(f"kamailio is not listening (exit {self.proc.poll()}):\n{self.log[-4000:]}")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {pattern!r} in kamailio's log:\n{self.log[-4000:]}")
            time.sleep(0.05)  # polling the log file for an event: the line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@dataclass
class Deployment:
    """What one test started: Kamailio processes (stopped at the end) and the nodes whose logs are kept."""

    kamailios: list[Front] = field(default_factory=list)
    nodes: list[CallPbx] = field(default_factory=list)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Kamailio stopped at the end; the nodes' logs written beside its own (node0.log, node1.log)."""
    started = Deployment()
    yield started
    for kamailio in started.kamailios:
        kamailio.stop()
    for i, node in enumerate(started.nodes):
        (tmp_path / f"node{i}.log").write_text(node.process.output)


def wait_any(nodes: Sequence[CallPbx], pattern: str, timeout: float = 10.0) -> CallPbx:
    """The first node whose log has a line matching `pattern`."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            if regex.search(node.process.output):
                return node
        time.sleep(0.05)  # polling both nodes' logs for an event: the line
    raise AssertionError(f"no node logged {pattern!r}:\n" + "\n=====\n".join(n.tail(3000) for n in nodes))


def requests_received(node: CallPbx, method: str, call_id: str = "") -> int:
    """How many `method` requests (with `call_id`, if given) the node's SIP trace shows it received."""
    messages = re.split(r"^.*(?=<-- |--> )", node.process.output, flags=re.MULTILINE)
    return sum(
        1
        for m in messages
        if m.startswith("<-- ") and re.search(rf"^\s*{method} sip:", m, re.MULTILINE)
        and (not call_id or re.search(rf"^\s*Call-ID: {re.escape(call_id)}\s*$", m, re.MULTILINE | re.I))
    )  # fmt: skip


def call(sipp: SippSet, kamailio: Front, name: str, hold_ms: int) -> Sipp:  # noqa: F811
    """1001 calls 1002 through Kamailio, holds `hold_ms`, hangs up; the Call-ID starts with `name`-."""
    csv = sipp.users_csv([("1001", "pass1001", "1002")], f"{name}_users")
    args = [
        f"127.0.0.1:{kamailio.port}",
        "-inf",
        str(csv),
        "-d",
        str(hold_ms),
        "-cid_str",
        f"{name}-%u-%p@%s",
    ]
    return sipp.start(name, "front_uac.xml", args, timeout=30)


def call_id(caller: Sipp) -> str:
    """The Call-ID of the INVITE `caller` sent."""
    invite = next(m for m in caller.messages("sent") if m.startswith("INVITE "))
    return header(invite, "Call-ID")[0]


NODE = """[store]
url = "{url}"

[security]
trusted_proxies = ["127.0.0.1"]

[calls]
drain_timeout = 30
"""


def deploy(start_pbx: StartPbx, deployment: Deployment, tmp_path: Path) -> tuple[list[CallPbx], Front]:  # noqa: F811
    """Two nodes on one PostgreSQL schema, trusting 127.0.0.1, and Kamailio in front of them, listening."""
    extra = NODE.format(url=postgres_server.server().url())
    deployment.nodes += [start_pbx(extra=extra), start_pbx(extra=extra)]
    kamailio = Front(tmp_path / "kamailio", [node.sip for node in deployment.nodes])
    deployment.kamailios.append(kamailio)
    kamailio.wait_listening()
    return deployment.nodes, kamailio


@pytest.mark.skipif(_kamailio_missing(), reason="kamailio is not installed (Debian: kamailio)")
def test_phones_through_kamailio_reach_the_nodes_and_a_drained_node_is_skipped(
    start_pbx,  # noqa: F811 - the fixture
    sipp,  # noqa: F811 - the fixture
    deployment,
    tmp_path,
):
    nodes, kamailio = deploy(start_pbx, deployment, tmp_path)

    # The callee registers through the proxy, from behind "NAT": the proxy adds a Path with its real
    # flow, the PBX echoes it (Supported: path); the node that did not take the REGISTER hears of it.
    phone_port = free_port()
    csv = sipp.users_csv([("1002", "pass1002", NAT_CONTACT)], "register")
    # Two REGISTERs (two Call-IDs, one after the other): the address-of-record's hash sends both to one node.
    register = sipp.start(
        "register",
        "front_register.xml",
        [f"127.0.0.1:{kamailio.port}", "-inf", str(csv), "-l", "1"],
        port=phone_port,
        calls=2,
    )
    sipp.check(nodes[0], register)
    path = f"<sip:127.0.0.1:{kamailio.port};lr;received=sip:127.0.0.1:{phone_port}>"
    for ok in register.responses(200):
        assert header(ok, "Path") == [path], ok
    registrar = wait_any(nodes, rf"Registered 1002@default at sip:1002@{re.escape(NAT_CONTACT)}\b")
    other = nodes[1 - nodes.index(registrar)]
    other.wait_for(r"Registrations of 1002@default changed on another node: 1 contact\(s\)")
    # twice 401 then 200 (and any retransmission); the trace lines may reach the log up to 0.1 s late
    deadline = time.monotonic() + 5
    while requests_received(registrar, "REGISTER") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the log for lines still on their way
    assert requests_received(registrar, "REGISTER") >= 4
    assert requests_received(other, "REGISTER") == 0

    # 1001 calls 1002 through the proxy and holds the call 8 s. The node that took it reaches the phone
    # through the Path, and its ACK through the proxy's Record-Route and the phone's aliased Contact.
    uas_args = ["-key", "nat_contact", NAT_CONTACT, "-m", "2"]
    uas = sipp.uas("uas", "front_uas.xml", "1002", phone_port, uas_args)
    first = call(sipp, kamailio, "first", hold_ms=8000)
    taken = wait_any(nodes, r"^\s*Call-ID: first-", timeout=15)
    spare = nodes[1 - nodes.index(taken)]
    taken.wait_for(r"^\s*ACK sip:1002@127\.0\.0\.9:5999;alias=127\.0\.0\.1~", timeout=15)

    # Drain that node while the call is up: its 503 to the health check takes it out of the dispatcher.
    taken.process.proc.send_signal(signal.SIGTERM)
    taken.wait_for(r"Draining: no new calls; waiting up to 30 s for 1 call\(s\) to end")
    kamailio.wait_log(rf"PBX node down: sip:127\.0\.0\.1:{taken.sip}\b")

    # A new call goes to the other node; the first one ends normally on the drained node.
    second = call(sipp, kamailio, "second", hold_ms=200)
    sipp.check(spare, second)
    sipp.check(taken, first, uas)
    spare.wait_for(r"Call \S+ ended: normal \(status 200,")
    taken.wait_for(r"Call \S+ ended: normal \(status 200,")
    assert taken.process.proc.wait(timeout=20) in (0, -signal.SIGTERM)

    # Every request of a call (INVITE, ACK, BYE) reached the node that took its INVITE, and only that one.
    for method in ("INVITE", "ACK", "BYE"):
        assert requests_received(taken, method, call_id(first)) >= 1, method
        assert requests_received(spare, method, call_id(first)) == 0, method
        assert requests_received(spare, method, call_id(second)) >= 1, method
        assert requests_received(taken, method, call_id(second)) == 0, method
    assert "Traceback" not in taken.process.output + spare.process.output

    # The node started again answers the health check with 200: Kamailio puts it back.
    drained = taken.process.output
    taken.process = PbxProcess(taken.ports["path"])
    taken.process.wait_ready(taken.ports["listeners"])
    kamailio.wait_log(rf"PBX node up: sip:127\.0\.0\.1:{taken.sip}\b")
    assert "Traceback" not in drained + taken.process.output

    # A node that stops answering at all (killed) is taken out too.
    spare.process.kill9()
    kamailio.wait_log(rf"PBX node down: sip:127\.0\.0\.1:{spare.sip}\b", timeout=15)


@pytest.mark.skipif(_kamailio_missing(), reason="kamailio is not installed (Debian: kamailio)")
def test_two_baresip_phones_hear_each_other_through_kamailio_and_the_nodes(
    start_pbx,  # noqa: F811 - the fixture
    deployment,
    tmp_path,
):
    """Real phones registered through Kamailio: 1001 calls 1002, each hears the other's tone (the media
    goes through the node's relay, the signalling through Kamailio), the callee hangs up."""
    nodes, kamailio = deploy(start_pbx, deployment, tmp_path)
    phones = TonePhones(tmp_path, kamailio.port, seconds=30.0)
    try:
        caller = phones.add("1001", CALLER_TONE)
        callee = phones.add("1002", CALLEE_TONE, "answermode=auto")
        phones.wait_registered()
        for user in ("1001", "1002"):
            registrar = wait_any(nodes, rf"Registered {user}@default at ")
            other = nodes[1 - nodes.index(registrar)]
            other.wait_for(rf"Registrations of {user}@default changed on another node: 1 contact\(s\)")
        caller_ctl, callee_ctl = caller.control(), callee.control()

        assert caller_ctl.dial(f"sip:1002@127.0.0.1:{kamailio.port}").get("ok"), caller.output[-3000:]
        caller_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        callee_ctl.wait_event("CALL_ESTABLISHED", timeout=15)
        wait_heard(tmp_path / "heard_by_1001", HEARD_SECONDS)
        wait_heard(tmp_path / "heard_by_1002", HEARD_SECONDS)

        assert callee_ctl.hangup().get("ok"), callee.output[-3000:]
        callee_ctl.wait_event("CALL_CLOSED", timeout=10)
        caller_ctl.wait_event("CALL_CLOSED", timeout=10)
        node = wait_any(nodes, r"Call \S+ ended: normal \(status 200,.*1001@default -> 1002 answered by 1002")
        assert "ended: normal" not in nodes[1 - nodes.index(node)].process.output
    finally:
        phones.stop()  # closes the dumps (their WAV headers get their final length)

    heard_by_caller = read_wav(heard_dump(tmp_path / "heard_by_1001"))
    heard_by_callee = read_wav(heard_dump(tmp_path / "heard_by_1002"))
    assert_hears(heard_by_caller, CALLEE_TONE, CALLER_TONE, label="1001 hears 1002")
    assert_hears(heard_by_callee, CALLER_TONE, CALLEE_TONE, label="1002 hears 1001")
    assert "Traceback" not in "".join(n.process.output for n in nodes)
