"""What the console shows and does, as plain data: the PBX's live objects read into JSON-ready dicts, and
the operator's actions (hang up, unregister, delete a message, reload and simulate dialplans).

`PbxView` is built by the composition root (`pbx.service.admin`) from the objects the PBX already has: the
B2BUA (`calls`), the location service, the trunks' states, the CDR store, the mailboxes, the extension
directory (`pbx.admin.extensions`) and the dialplan engine. The pages and the JSON API both read it, so
they always show the same thing. Every method takes the tenant explicitly: role checks happen before
(`pbx.admin.api`), and nothing here crosses tenants.

Nothing here knows HTTP or the config.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from pbx.admin.extensions import ExtensionDirectory
from pbx.b2bua.media import parse_sdp
from pbx.dialplan.actions import RESULTS, DialplanError
from pbx.dialplan.engine import DialplanEngine
from pbx.dialplan.simulate import (
    CallerInfo,
    CallInfo,
    TenantDirectory,
    check_dialplans,
    make_context,
    simulate_call,
)
from pbx.store.records import Cdr, VoicemailMessage

CDR_FIELDS = (
    "call_id", "tenant", "caller", "dialed", "answered_by", "start", "answer", "end", "cause", "status",
    "hangup_by", "legs",
)  # fmt: skip
MAX_CDRS = 1000
"""The most CDRs a page or an export reads."""
MAX_ROWS = 2000
"""The most registrations or calls one answer lists (a page polled every 2 s must stay cheap)."""


class NotFound(LookupError):
    """The object does not exist (or belongs to a tenant the user does not see)."""


@dataclass(slots=True)
class PbxView:
    """The console's window onto the running PBX.

    Attributes:
        tenants: The tenants' names, in order.
        clock: The reactor's time (wall-clock seconds in a real reactor).
        extensions: The live extension directory.
        b2bua: Has `calls` (call id -> `pbx.b2bua.Call`) and `counters`; None before calls exist.
        location: The registrar's `LocationService` (iterable of bindings, `remove`, `remove_aor`).
        trunk_states: The trunks' `TrunkStates` (iterable of `TrunkState`), or None without trunks.
        cdr_store: An `ICdrStore`.
        mailboxes: The voicemail boxes (`pbx.apps.voicemail.mailboxes.Mailboxes`), or None.
        dialplans: The live `DialplanEngine`.
        data_dir: Where voicemail WAV files live (relative `audio` paths are under it).
        started_at: When the PBX started (the clock's seconds).
        version: The PBX's version string.
        tracer: The call traces (`pbx.b2bua.trace.CallTracer`), or None when tracing is off.
    """

    tenants: Sequence[str]
    clock: IReactorTime
    extensions: ExtensionDirectory
    b2bua: Any = None
    location: Any = None
    trunk_states: Any = None
    cdr_store: Any = None
    mailboxes: Any = None
    dialplans: DialplanEngine | None = None
    data_dir: Path | None = None
    started_at: float = 0.0
    version: str = ""
    extra_status: dict[str, Callable[[], Any]] = field(default_factory=dict)
    tracer: Any = None

    def trace(self, tenant: str, call_id: str) -> dict[str, Any] | None:
        """The ladder of call `call_id` of `tenant` (active or kept), as the API's JSON; None if unknown."""
        found = self.tracer.get(call_id) if self.tracer is not None else None
        if found is None or found.tenant != tenant:
            return None
        result: dict[str, Any] = found.as_dict()
        return result

    # -- status ---------------------------------------------------------------------------------------------

    def status(self, tenants: Iterable[str]) -> dict[str, Any]:
        """PBX-wide figures, counted over `tenants` (those the user sees)."""
        seen = set(tenants)
        now = self.clock.seconds()
        calls = [c for c in self._calls() if c.tenant in seen]
        registrations = sum(1 for b in self._bindings() if b.tenant in seen)
        trunks = [t for t in self._trunks() if t.tenant in seen]
        return {
            "version": self.version,
            "uptime": round(now - self.started_at, 1),
            "tenants": [t for t in self.tenants if t in seen],
            "calls": len(calls),
            "answered_calls": sum(1 for c in calls if c.answered),
            "registrations": registrations,
            "trunks": len(trunks),
            "trunks_up": sum(1 for t in trunks if t.up),
            "dialplan_errors": len(self.dialplan_errors(None, seen)),
        }

    # -- registrations --------------------------------------------------------------------------------------

    def _bindings(self) -> Iterable[Any]:
        return list(self.location) if self.location is not None else []

    def registrations(self, tenant: str) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for b in self._bindings():
            if b.tenant != tenant:
                continue
            transport = b.received.split(":", 1)[0] if b.received else ""
            rows.append(
                {
                    "extension": b.aor,
                    "contact": b.contact,
                    "transport": transport,
                    "source": b.received.split(":", 1)[1] if ":" in b.received else b.received,
                    "user_agent": b.user_agent,
                    "expires_in": max(0, round(b.expires_at - now)),
                    "registered_at": b.registered_at,
                }
            )
        rows.sort(key=lambda r: (r["extension"], r["contact"]))
        return rows[:MAX_ROWS]

    def unregister(self, tenant: str, extension: str, contact: str | None = None) -> Deferred[int]:
        """Remove an extension's registrations (one contact, or all); NotFound if it has none."""
        found = [b for b in self._bindings() if b.tenant == tenant and b.aor == extension]
        if contact:
            found = [b for b in found if b.contact == contact]
        if not found:
            raise NotFound(f"no registration of {extension}")
        if contact:
            return self.location.remove(found[0]).addCallback(lambda _: 1)
        return self.location.remove_aor(tenant, extension).addCallback(lambda _: len(found))

    async def unregister_removed(self, tenant: str, extension: str) -> int:
        """Drop the registrations of an extension just removed (its phones could not refresh anyway)."""
        if not any(b.tenant == tenant and b.aor == extension for b in self._bindings()):
            return 0
        return await self.unregister(tenant, extension)

    # -- calls ----------------------------------------------------------------------------------------------

    def _calls(self) -> list[Any]:
        return list(self.b2bua.calls.values()) if self.b2bua is not None else []

    def calls(self, tenant: str) -> list[dict[str, Any]]:
        now = self.clock.seconds()
        return [self._call(c, now) for c in self._calls() if c.tenant == tenant][:MAX_ROWS]

    def _call(self, call: Any, now: float) -> dict[str, Any]:
        caller = call.caller
        legs = [
            {
                "extension": leg.extension,
                "uri": str(leg.target.uri),
                "status": leg.status,
                "winner": leg is call.winner,
            }
            for leg in call.legs
        ]
        state = "answered" if call.answered else ("ringing" if call.legs else "routing")
        return {
            "id": call.id,
            "tenant": call.tenant,
            "caller": caller.extension or f"trunk:{caller.trunk}/{caller.number}",
            "dialed": call.dialed,
            "callee": call.callee_extension,
            "state": state,
            "started_at": call.started_at,
            "answered_at": call.answered_at,
            "duration": round(now - call.started_at, 1),
            "legs": legs,
            "codec": _codec(call),
            "media": _media(call),
        }

    def hangup(self, tenant: str, call_id: str) -> None:
        """Hang up a call (BYE to both sides, or the caller rejected while it rings)."""
        call = self.b2bua.calls.get(call_id) if self.b2bua is not None else None
        if call is None or call.tenant != tenant:
            raise NotFound(f"no call {call_id}")
        if call.answered:
            call.hangup("admin")
        else:
            call.hangup_by = "admin"
            call.cause = "admin"
            call.reject(480, "Hung up by the operator")

    # -- trunks ---------------------------------------------------------------------------------------------

    def _trunks(self) -> list[Any]:
        return list(self.trunk_states) if self.trunk_states is not None else []

    def trunks(self, tenant: str) -> list[dict[str, Any]]:
        calls = self._calls()
        rows = []
        for state in self._trunks():
            if state.tenant != tenant:
                continue
            row = state.as_dict()
            row["last_error"] = (
                f"{state.code} {state.reason or ''}".strip()
                if state.code is not None and not 200 <= state.code < 300
                else (state.reason or "")
                if state.registration == "failed"
                else ""
            )
            row["calls"] = sum(1 for c in calls if c.tenant == tenant and _uses_trunk(c, state.trunk))
            rows.append(row)
        return rows

    def trunk_nodes(self, tenant: str) -> Deferred[list[dict[str, Any]]]:
        """Every PBX node's view of the tenant's trunks, from the store (`pbx.store.trunk_state`: with a
        shared PostgreSQL store, all the nodes'); [] when the store keeps none."""
        read = getattr(self.cdr_store, "trunk_statuses", None)
        if read is None:
            return succeed([])
        d: Deferred[list[Any]] = read()
        return d.addCallback(lambda rows: [dataclasses.asdict(r) for r in rows if r.tenant == tenant])

    # -- CDRs -----------------------------------------------------------------------------------------------

    def cdrs(
        self, tenant: str, filters: Mapping[str, str], limit: int = 100
    ) -> Deferred[list[dict[str, Any]]]:
        """The tenant's recent CDRs, newest first, filtered: `caller`, `dialed`, `cause` (substring),
        `since`/`until` (epoch seconds)."""
        if self.cdr_store is None:
            return succeed([])
        limit = max(1, min(limit, MAX_CDRS))
        d: Deferred[list[Cdr]] = self.cdr_store.cdrs(MAX_CDRS * 5)
        return d.addCallback(partial(_filter_cdrs, tenant, filters, limit))

    @staticmethod
    def cdrs_csv(rows: list[dict[str, Any]]) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, CDR_FIELDS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_safe(row.get(k)) for k in CDR_FIELDS})
        return out.getvalue()

    # -- voicemail ------------------------------------------------------------------------------------------

    def mailbox_list(self, tenant: str) -> list[dict[str, Any]]:
        if self.mailboxes is None:
            return []
        rows = []
        for box_tenant, box in self.mailboxes.mailboxes():
            if box_tenant != tenant:
                continue
            new, old = self.mailboxes.counts(tenant, box.number)
            rows.append({"number": box.number, "name": box.name, "new": new, "old": old})
        rows.sort(key=lambda r: r["number"])
        return rows

    def _box(self, tenant: str, number: str) -> Any:
        box = self.mailboxes.mailbox(tenant, number) if self.mailboxes is not None else None
        if box is None:
            raise NotFound(f"no mailbox {number}")
        return box

    def messages(self, tenant: str, number: str) -> Deferred[list[dict[str, Any]]]:
        self._box(tenant, number)
        d: Deferred[list[VoicemailMessage]] = self.mailboxes.messages(tenant, number)
        return d.addCallback(lambda found: [_message(m) for m in found])

    def _message(self, tenant: str, number: str, message_id: str) -> Deferred[VoicemailMessage]:
        self._box(tenant, number)

        def pick(found: list[VoicemailMessage]) -> VoicemailMessage:
            for m in found:
                if m.id == message_id:
                    return m
            raise NotFound(f"no message {message_id}")

        d: Deferred[list[VoicemailMessage]] = self.mailboxes.messages(tenant, number)
        return d.addCallback(pick)

    def message_audio(self, tenant: str, number: str, message_id: str) -> Deferred[Path]:
        """The WAV file of a message (NotFound if the message or its file is gone)."""

        def path_of(m: VoicemailMessage) -> Path:
            path = self.mailboxes.audio_path(m)
            if not Path(path).is_file():
                raise NotFound(f"no audio for message {message_id}")
            return Path(path)

        return self._message(tenant, number, message_id).addCallback(path_of)

    def delete_message(self, tenant: str, number: str, message_id: str) -> Deferred[None]:
        return self._message(tenant, number, message_id).addCallback(self.mailboxes.delete)

    # -- dialplans ------------------------------------------------------------------------------------------

    def dialplan_errors(
        self, tenant: str | None, tenants: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """The live engine's last error of each template (of one tenant, or of `tenants`)."""
        if self.dialplans is None:
            return []
        seen = {tenant} if tenant is not None else set(tenants or ())
        root = self.dialplans.directory
        rows = []
        for path, error in self.dialplans.errors().items():
            try:
                owner = Path(path).relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
            if owner in seen:
                rows.append({"file": str(Path(path).relative_to(root)), "error": str(error)})
        return rows

    def dialplans_of(self, tenant: str) -> dict[str, Any]:
        """The tenant's templates, with the live engine's last error of each."""
        templates: list[dict[str, Any]] = []
        if self.dialplans is not None:
            base = self.dialplans.directory / tenant
            errors = {row["file"]: row["error"] for row in self.dialplan_errors(tenant)}
            if base.is_dir():
                for path in sorted(base.rglob("*.j2"))[:500]:
                    rel = str(path.relative_to(self.dialplans.directory))
                    name = str(path.relative_to(base))[: -len(".j2")]
                    templates.append({"template": name, "file": rel, "error": errors.get(rel, "")})
        return {"tenant": tenant, "templates": templates}

    def reload_dialplans(self, tenant: str) -> dict[str, Any]:
        """Check every template of the tenant now (compile and sample renders, as `pbx dialplan check`);
        the live engine picks changed files up on their next use."""
        if self.dialplans is None:
            return {"ok": True, "problems": [], "checked": 0}
        directory = self._tenant_directory(tenant)
        problems, checked = check_dialplans(self.dialplans.directory, {tenant: directory}, now=_now())
        mine = [str(p) for p in problems if f"/{tenant}/" in str(p) or str(p).startswith(tenant)]
        return {"ok": not mine, "problems": mine, "checked": checked}

    def _tenant_directory(self, tenant: str) -> TenantDirectory:
        from pbx.dialplan.simulate import ExtensionInfo as Info

        rows = self.extensions.extensions(tenant)
        seed = self.extensions.seed(tenant)
        return TenantDirectory(
            {r["number"]: Info(**{k: r[k] for k in ("number", "name", "may_call_out")}) for r in rows},
            dict(seed.groups) if seed is not None else {},
        )

    def simulate(
        self, tenant: str, caller: str, dialed: str, results: Sequence[str] = (), digits: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The actions a call from `caller` to `dialed` would run (`pbx dialplan simulate`)."""
        if self.dialplans is None:
            raise NotFound("no dialplans")
        for r in results:
            if r not in RESULTS:
                raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {r!r}")
        directory = self._tenant_directory(tenant)
        info = directory.extensions.get(caller)
        context = make_context(
            call=CallInfo(id="simulated", dialed=dialed),
            caller=CallerInfo(
                tenant=tenant,
                extension=caller or None,
                name=info.name if info is not None else "",
                authenticated=info is not None,
                may_call_out=info.may_call_out if info is not None else False,
            ),
            directory=directory,
            now=_now(),
        )
        engine = self.dialplans
        try:
            lines = simulate_call(
                partial(engine.render, tenant), context, list(results), digits=list(digits), show_source=True
            )
        except DialplanError as e:
            return {"ok": False, "error": str(e), "lines": []}
        return {"ok": True, "error": "", "lines": lines}


def _filter_cdrs(
    tenant: str, filters: Mapping[str, str], limit: int, found: list[Cdr]
) -> list[dict[str, Any]]:
    rows = []
    since = _float(filters.get("since"))
    until = _float(filters.get("until"))
    for cdr in found:
        if cdr.tenant != tenant:
            continue
        if any(
            filters.get(k) and filters[k] not in str(getattr(cdr, k)) for k in ("caller", "dialed", "cause")
        ):
            continue
        if since is not None and cdr.start < since:
            continue
        if until is not None and cdr.start > until:
            continue
        rows.append({k: getattr(cdr, k) for k in CDR_FIELDS})
        if len(rows) >= limit:
            break
    return rows


def _now() -> datetime:
    return datetime.now().astimezone()


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _csv_safe(value: Any) -> Any:
    """Keep a spreadsheet from running a formula a caller put in a field (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _message(m: VoicemailMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "mailbox": m.mailbox,
        "folder": m.folder,
        "caller_number": m.caller_number,
        "caller_name": m.caller_name,
        "received_at": m.received_at,
        "duration": m.duration,
    }


def _uses_trunk(call: Any, trunk: str) -> bool:
    if call.caller.trunk == trunk:
        return True
    return any(str(getattr(leg, "extension", "")).startswith(f"trunk:{trunk}") for leg in call.legs)


def _codec(call: Any) -> str:
    """The call's audio codec: the first format of the SDP the PBX last sent the caller (its answer, once
    answered), else of the caller's offer."""
    sdp = None
    try:
        local = getattr(getattr(call, "a", None), "local_body", None)
        if call.answered and local and local[0]:
            sdp = parse_sdp(local[0])
        else:
            sdp = getattr(call, "offer_sdp", None)
    except Exception:
        sdp = None
    if sdp is None:
        return ""
    for media in sdp.media:
        if media.media == "audio" and media.port and media.formats:
            rtpmap = media.rtpmap
            for pt in media.formats:
                if pt in rtpmap and rtpmap[pt].encoding.lower() != "telephone-event":
                    return f"{rtpmap[pt].encoding}/{rtpmap[pt].clock_rate}"
    return ""


def _media(call: Any) -> dict[str, Any] | None:
    """Each side's relay counters: packets relayed from that side's phone, dropped, latched address."""
    media = getattr(call, "media", None)
    if media is None or getattr(media, "closed", False):
        return None
    stats = media.session.stats()
    out: dict[str, Any] = {}
    for leg in (stats.a, stats.b):
        out[leg.name] = {
            "packets": leg.packets,
            "bytes": leg.bytes,
            "dropped": leg.dropped,
            "invalid": leg.invalid,
            "latched": f"{leg.latched[0]}:{leg.latched[1]}" if leg.latched else "",
            "loss": None,
            "jitter": None,
        }
    return out
