"""A console over fake PBX objects, driven through a real `twisted.web` Site by raw HTTP on a
`StringTransport`: no socket, no thread, no reactor (the memory store and a synchronous scrypt make every
request complete at once)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pbx.admin.auth import Logins, Sessions
from pbx.admin.extensions import ExtensionDirectory, TenantSeed
from pbx.admin.passwords import hash_password
from pbx.admin.site import ConsoleApp
from pbx.admin.view import PbxView
from pbx.store import MemoryLocationStore
from pbx.store.admin import AdminUser, ApiToken
from pbx.store.records import Binding, Cdr, VoicemailMessage
from pbx.trunks.state import TrunkStates

FAST = {"n": 2**4, "r": 1, "p": 1}
"""scrypt parameters for tests: the stored hash says which were used."""


def fast_hash(password: str) -> str:
    return hash_password(password, **FAST)


@dataclass
class FakeExtension:
    number: str
    name: str = ""
    password: str | None = "secret-1001"
    ha1_md5: str | None = None
    ha1_sha256: str | None = None


@dataclass
class FakeCaller:
    tenant: str
    extension: str
    trunk: str = ""
    number: str = ""


@dataclass
class FakeLeg:
    extension: str
    target: Any
    status: int = 180


@dataclass
class FakeTarget:
    uri: str


@dataclass
class FakeCall:
    id: str
    caller: FakeCaller
    dialed: str
    answered_at: float | None = None
    started_at: float = 0.0
    legs: list[FakeLeg] = field(default_factory=list)
    winner: Any = None
    media: Any = None
    offer_sdp: Any = None
    own_sdp: Any = None
    hung_up: str = ""
    rejected: int = 0
    hangup_by: str = ""
    cause: str = ""

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def callee_extension(self) -> str:
        return ""

    def hangup(self, by: str) -> None:
        self.hung_up = by

    def reject(self, status: int, reason: str | None = None) -> None:
        self.rejected = status


class FakeB2bua:
    def __init__(self) -> None:
        self.calls: dict[str, FakeCall] = {}
        self.counters: dict[str, int] = {}


class FakeLocation:
    def __init__(self, bindings: list[Binding]) -> None:
        self.bindings = bindings

    def __iter__(self) -> Any:
        return iter(list(self.bindings))

    def remove_aor(self, tenant: str, aor: str) -> Any:
        self.bindings = [b for b in self.bindings if (b.tenant, b.aor) != (tenant, aor)]
        return succeed(None)

    def remove(self, binding: Binding) -> Any:
        self.bindings = [b for b in self.bindings if b is not binding]
        return succeed(None)


@dataclass
class FakeBox:
    number: str
    name: str = ""


class FakeMailboxes:
    def __init__(self, store: MemoryLocationStore, root: Path) -> None:
        self.store = store
        self.root = root
        self.boxes = {("acme", "1001"): FakeBox("1001", "Alice"), ("globex", "2001"): FakeBox("2001")}

    def mailboxes(self) -> Any:
        return [(t, box) for (t, _), box in self.boxes.items()]

    def mailbox(self, tenant: str, number: str) -> Any:
        return self.boxes.get((tenant, number))

    def counts(self, tenant: str, number: str) -> tuple[int, int]:
        found = [m for m in self.store.voicemail.values() if (m.tenant, m.mailbox) == (tenant, number)]
        return sum(m.folder == "new" for m in found), sum(m.folder != "new" for m in found)

    def messages(self, tenant: str, number: str) -> Any:
        return self.store.messages(tenant, number)

    def audio_path(self, message: VoicemailMessage) -> Path:
        return self.root / message.audio

    def delete(self, message: VoicemailMessage) -> Any:
        (self.root / message.audio).unlink(missing_ok=True)
        return self.store.delete_message(message.tenant, message.mailbox, message.id)


def binding(tenant: str, aor: str, port: int = 5070) -> Binding:
    return Binding(
        tenant=tenant,
        aor=aor,
        contact=f"sip:{aor}@127.0.0.1:{port}",
        expires_at=4102444800.0,
        call_id=f"reg-{aor}",
        cseq=1,
        received=f"udp:127.0.0.1:{port}",
        local="udp:127.0.0.1:5060",
        user_agent="SIPp",
        registered_at=1.0,
    )


class Console:
    """The console over fakes: tenants `acme` (1001, 1002) and `globex` (2001), users of each role."""

    def __init__(self, tmp: Path, *, max_failures: int = 3) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryLocationStore()
        seeds = [
            TenantSeed(
                "acme",
                "acme.example",
                "acme.example",
                {"1001": FakeExtension("1001", "Alice"), "1002": FakeExtension("1002")},
            ),
            TenantSeed("globex", "globex.example", "globex.example", {"2001": FakeExtension("2001")}),
        ]
        self.extensions = ExtensionDirectory(seeds, self.store, self.clock.seconds)
        self.b2bua = FakeB2bua()
        self.location = FakeLocation([binding("acme", "1001"), binding("globex", "2001", 5080)])
        self.trunks = TrunkStates(self.clock)
        self.trunks.add("acme", "carrier", registers=True, contact_user="acme")
        self.trunks.update("acme", "carrier", registration="failed", code=403, reason="Forbidden")
        self.trunks.add("globex", "other")
        dialplans = tmp / "dialplans"
        for tenant in ("acme", "globex"):
            (dialplans / tenant).mkdir(parents=True)
            (dialplans / tenant / "main.j2").write_text(
                "{% if call.dialed in extensions %}dial {{ call.dialed }}\nvoicemail {{ call.dialed }}\n"
                "{% else %}hangup 404\n{% endif %}\n"
            )
        from pbx.dialplan.engine import DialplanEngine

        self.mailboxes = FakeMailboxes(self.store, tmp)
        self.view = PbxView(
            tenants=["acme", "globex"],
            clock=self.clock,
            extensions=self.extensions,
            b2bua=self.b2bua,
            location=self.location,
            trunk_states=self.trunks,
            cdr_store=self.store,
            mailboxes=self.mailboxes,
            dialplans=DialplanEngine(dialplans),
            started_at=self.clock.seconds() - 60,
            version="test",
        )
        self.logins = Logins(self.store, self.clock, max_failures=max_failures, window=60, lockout=600)
        self.sessions = Sessions(self.clock, 600)
        self.app = ConsoleApp(self.view, self.logins, self.sessions, lockout=600, users=self.store)
        self.site = self.app.site()
        for name, role, tenant in (
            ("root", "admin", ""),
            ("ann", "tenant_admin", "acme"),
            ("gus", "tenant_admin", "globex"),
            ("val", "viewer", "acme"),
        ):
            self.store.put_admin_user(
                AdminUser(name=name, password_hash=fast_hash(f"{name}-password"), role=role, tenant=tenant)
            )

    def add_token(self, user: str, token: str) -> None:
        from pbx.admin.passwords import token_hash

        self.store.put_api_token(ApiToken(token_hash=token_hash(token), user=user))

    def add_call(self, call_id: str, tenant: str = "acme", answered: bool = True) -> FakeCall:
        call = FakeCall(
            call_id,
            FakeCaller(tenant, "1001" if tenant == "acme" else "2001"),
            "1002",
            answered_at=self.clock.seconds() - 5 if answered else None,
            started_at=self.clock.seconds() - 10,
            legs=[FakeLeg("1002", FakeTarget("sip:1002@127.0.0.1:5072"), 200)],
        )
        self.b2bua.calls[call_id] = call
        return call

    def add_message(self, tenant: str, box: str, message_id: str, tmp: Path) -> VoicemailMessage:
        audio = f"voicemail/{tenant}/{box}/{message_id}.wav"
        (tmp / audio).parent.mkdir(parents=True, exist_ok=True)
        (tmp / audio).write_bytes(b"RIFF" + b"\0" * 40)
        message = VoicemailMessage(
            tenant=tenant, mailbox=box, id=message_id, folder="new", caller_number="1002", caller_name="",
            received_at=1.0, duration=3.0, call_id="c", audio=audio, emailed=False,
        )  # fmt: skip
        self.store.add_message(message)
        return message

    def add_cdr(self, tenant: str, caller: str, dialed: str, cause: str = "normal") -> None:
        self.store.write_cdr(
            Cdr(
                call_id=f"cdr-{caller}-{dialed}", tenant=tenant, caller=caller, dialed=dialed,
                answered_by=dialed, start=10.0, answer=11.0, end=20.0, cause=cause, status=200,
                hangup_by="caller", legs="",
            )
        )  # fmt: skip

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self, source)


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Client:
    """A browser or script: keeps cookies, sends raw HTTP/1.1 to the site through a StringTransport."""

    def __init__(self, console: Console, source: str) -> None:
        self.console = console
        self.source = source
        self.cookies: dict[str, str] = {}
        self.token: str | None = None
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> Reply:
        body = b""
        all_headers = {"Host": "console.test", "Connection": "close"}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        if form is not None:
            body = urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if csrf and self.csrf and method not in ("GET", "HEAD") and form is None:
            all_headers["X-CSRF-Token"] = self.csrf
        all_headers.update(headers or {})
        all_headers["Content-Length"] = str(len(body))
        raw = (
            f"{method} {path} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
            + "\r\n"
        )
        transport = StringTransport(peerAddress=IPv4Address("TCP", self.source, 40000))
        protocol = self.console.site.buildProtocol(IPv4Address("TCP", self.source, 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(raw.encode() + body)
        return self._parse(transport.value())

    def _parse(self, data: bytes) -> Reply:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        for value in headers.get("set-cookie", []):
            cookie = SimpleCookie()
            cookie.load(value)
            for key, morsel in cookie.items():
                if morsel.value:
                    self.cookies[key] = morsel.value
                else:
                    self.cookies.pop(key, None)
        if "chunked" in (headers.get("transfer-encoding") or [""])[0]:
            body = _unchunk(body)
        return Reply(status, headers, body)

    def login(self, name: str, password: str | None = None) -> Reply:
        reply = self.request(
            "POST",
            "/api/v1/session",
            json_body={"username": name, "password": password or f"{name}-password"},
        )
        if reply.status == 200:
            self.csrf = reply.json["csrf"]
        return reply

    def page_csrf(self, html: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found is not None
        return found.group(1)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
