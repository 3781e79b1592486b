"""SIP dialogs (RFC 3261 section 12, with the INVITE dialog states of 13.2.2.4 and 13.3.1.4).

- `Dialog`: the dialog state of 12.1 (Call-ID, tags, URIs, route set, remote target, CSeq numbers, secure
  flag) created on the UAS side (12.1.1) or the UAC side (12.1.2); builds requests within the dialog with
  loose or strict routing (12.2.1.1) and the ACK for a 2xx (13.2.2.4); checks the CSeq order of incoming
  requests (12.2.2) and follows target refreshes in both directions (12.2.1.2, 12.2.2). Its states, early,
  confirmed and terminated, walk the table `DIALOG_STATES`.
- `DialogTable`: finds the dialog of an incoming in-dialog request or of a response (12.2.2, 12.2.1.2).
- `destination` and `request_next_hop`: where a request goes (8.1.2), as (transport, host, port).

This module knows nothing of transports, Via headers or transactions (the stack adds the Via; the ACK for a
2xx is sent without a transaction by the caller), of DNS (RFC 3263 NAPTR/SRV lookups are the caller's: a
URI without a port simply gets the default port), of SDP or offer/answer, of PRACK (RFC 3262) and of session
timers (RFC 4028; Session-Expires headers pass through untouched). Retransmitting the 2xx and ACKing
retransmitted 2xx responses is `pbx.sip.invite`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from pbx.sip.errors import SipError
from pbx.sip.headers import MAX_CSEQ, NameAddress
from pbx.sip.message import Headers, Request, Response
from pbx.sip.uri import URI, SipURI

# Dialog states (RFC 3261 12).
EARLY: Final = "early"
CONFIRMED: Final = "confirmed"
TERMINATED: Final = "terminated"

# Inputs of the dialog state table: the INVITE's responses, and the end of the dialog.
PROVISIONAL: Final = "1xx"
SUCCESS: Final = "2xx"
FAILURE: Final = "300-699"
TERMINATE: Final = "terminate"

# RFC 3261 12, 13.2.2.4 and 13.3.1.4: an INVITE's 1xx with a To tag makes an early dialog, its 2xx confirms
# it, a 300-699 final response ends an early dialog (a failed re-INVITE leaves a confirmed one as it was).
DIALOG_STATES: Final[dict[tuple[str, str], str]] = {
    (EARLY, PROVISIONAL): EARLY,
    (EARLY, SUCCESS): CONFIRMED,
    (EARLY, FAILURE): TERMINATED,
    (EARLY, TERMINATE): TERMINATED,
    (CONFIRMED, PROVISIONAL): CONFIRMED,
    (CONFIRMED, SUCCESS): CONFIRMED,
    (CONFIRMED, FAILURE): CONFIRMED,
    (CONFIRMED, TERMINATE): TERMINATED,
    (TERMINATED, PROVISIONAL): TERMINATED,
    (TERMINATED, SUCCESS): TERMINATED,
    (TERMINATED, FAILURE): TERMINATED,
    (TERMINATED, TERMINATE): TERMINATED,
}

# Requests that refresh the remote target (RFC 3261 12.2, RFC 3311 UPDATE, RFC 6665 SUBSCRIBE/NOTIFY,
# RFC 3515 REFER): they carry our Contact, and theirs replaces the remote target.
TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Responses to any request in a dialog that end it (RFC 3261 12.2.1.2).
_DIALOG_ENDING: Final = frozenset({408, 481})

DialogKey = tuple[str, str, str | None]


def _input(status: int) -> str:
    if status < 200:
        return PROVISIONAL
    if status < 300:
        return SUCCESS
    return FAILURE


def _contact_uri(message: Request | Response) -> URI | None:
    """The URI of the first Contact (None when absent or `*`)."""
    contacts = message.contacts
    if not contacts or contacts[0].wildcard:
        return None
    return contacts[0].uri


def _request_uri(uri: URI) -> URI:
    """A URI fit for a Request-URI: no headers, no `method` parameter (RFC 3261 19.1.1 table 1)."""
    if isinstance(uri, SipURI) and (uri.headers or uri.has_param("method")):
        return uri.without_param("method").replace(headers=())
    return uri


def _route_uri(route: str) -> URI:
    return NameAddress.parse(route).uri


def _sip_uri(uri: URI, what: str) -> SipURI:
    if not isinstance(uri, SipURI):
        raise ValueError(f"cannot route to {what} {uri}: not a sip/sips URI")
    return uri


class Dialog:
    """The state of one dialog, seen from our side (RFC 3261 12.1).

    Create it with `create_uas` or `create_uac`; it is mutable and updated by `receive_request`,
    `receive_response` and `response_sent`.

    Attributes:
        call_id: the Call-ID.
        local_tag: our tag (From tag on the UAC side, To tag on the UAS side).
        remote_tag: the peer's tag; None while an early UAC dialog has none yet (or for an RFC 2543 peer).
        local_uri: our From (UAC) / To (UAS) address with our tag set.
        remote_uri: the peer's address with its tag set when known.
        local_contact: our Contact, sent in target-refresh requests.
        remote_target: the URI of the peer's Contact: the Request-URI of our requests.
        route_set: Route values (`"<sip:p1.example.com;lr>"`), first hop first.
        local_cseq: the CSeq number of our last request (0 before the first on the UAS side).
        remote_cseq: the CSeq number of the peer's last request; None until it sends one.
        secure: the dialog was set up with a sips Request-URI.
        state: `EARLY`, `CONFIRMED` or `TERMINATED`.
        is_uac: True when we sent the request that created the dialog.
    """

    # `local_uri` and `remote_uri` are kept as the text of their header (what every request in the dialog
    # writes in From and To), parsed when read: a NameAddress with its URI and parameters costs about five
    # times the text, and a dialog lives as long as its call.
    __slots__ = (
        "_local_uri",
        "_remote_uri",
        "call_id",
        "is_uac",
        "local_contact",
        "local_cseq",
        "local_tag",
        "remote_cseq",
        "remote_tag",
        "remote_target",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str | None,
        local_uri: NameAddress,
        remote_uri: NameAddress,
        local_contact: NameAddress | str,
        remote_target: URI,
        route_set: Sequence[str] = (),
        local_cseq: int = 0,
        remote_cseq: int | None = None,
        secure: bool = False,
        state: str = CONFIRMED,
        is_uac: bool,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_contact = local_contact
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.secure = secure
        self.state = state
        self.is_uac = is_uac

    @property
    def local_uri(self) -> NameAddress:
        """Our From (UAC) / To (UAS) address with our tag set."""
        return NameAddress.parse(self._local_uri)

    @local_uri.setter
    def local_uri(self, value: NameAddress) -> None:
        self._local_uri = str(value)

    @property
    def remote_uri(self) -> NameAddress:
        """The peer's address with its tag set when known."""
        return NameAddress.parse(self._remote_uri)

    @remote_uri.setter
    def remote_uri(self, value: NameAddress) -> None:
        self._remote_uri = str(value)

    # -- creation ----------------------------------------------------------------------------------------

    @classmethod
    def create_uas(cls, request: Request, response: Response, local_contact: NameAddress | str) -> Dialog:
        """The dialog a UAS creates when it sends a 101-299 response with a To tag (RFC 3261 12.1.1).

        Route set: the request's Record-Route values in order; remote target: the request's Contact; remote
        CSeq: the request's; local CSeq: 0 (the first request we send is CSeq 1). Early for a 1xx,
        confirmed for a 2xx.

        Raises:
            ValueError: the response is not 101-299 or has no To tag.
            SipError: 400 when the request has no Contact (the B2BUA answers with it).
        """
        state = cls._initial_state(response)
        local_tag = response.to.tag
        if local_tag is None:
            raise ValueError("a response that creates a dialog needs a To tag")
        remote_target = _contact_uri(request)
        if remote_target is None:
            raise SipError(400, "Missing Contact header")
        call_id = request.call_id
        if call_id is None:
            raise ValueError("request without Call-ID")
        remote_uri = request.from_
        return cls(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag=remote_uri.tag,
            local_uri=request.to.with_param("tag", local_tag),
            remote_uri=remote_uri,
            local_contact=local_contact,
            remote_target=remote_target,
            route_set=request.headers.get_all("Record-Route"),
            local_cseq=0,
            remote_cseq=request.cseq.number,
            secure=request.uri.scheme == "sips",
            state=state,
            is_uac=False,
        )

    @classmethod
    def create_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a UAC creates on a 101-299 response to its request (RFC 3261 12.1.2).

        Route set: the response's Record-Route values reversed; remote target: the response's Contact (the
        request's Request-URI when a provisional response has none); local CSeq: the request's; remote tag:
        the response's To tag (None when a provisional response has none: learned later); local contact:
        the request's Contact. Early for a 1xx, confirmed for a 2xx.

        Raises:
            ValueError: the response is not 101-299, the request has no From tag or no Contact, or a 2xx
                has no Contact.
        """
        state = cls._initial_state(response)
        local_uri = request.from_
        local_tag = local_uri.tag
        if local_tag is None:
            raise ValueError("a request that creates a dialog needs a From tag")
        contact = request.headers.get("Contact")
        if contact is None:
            raise ValueError("a request that creates a dialog needs a Contact")
        remote_target = _contact_uri(response)
        if remote_target is None:
            if state == CONFIRMED:
                raise ValueError("a 2xx that creates a dialog needs a Contact")
            remote_target = request.uri
        call_id = request.call_id
        if call_id is None:
            raise ValueError("request without Call-ID")
        remote_tag = response.to.tag
        remote_uri = request.to.without_param("tag")
        return cls(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=local_uri,
            remote_uri=remote_uri if remote_tag is None else remote_uri.with_param("tag", remote_tag),
            local_contact=contact,
            remote_target=remote_target,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_cseq=request.cseq.number,
            remote_cseq=None,
            secure=request.uri.scheme == "sips",
            state=state,
            is_uac=True,
        )

    @staticmethod
    def _initial_state(response: Response) -> str:
        if 100 < response.status < 200:
            return EARLY
        if 200 <= response.status < 300:
            return CONFIRMED
        raise ValueError(f"a {response.status} response does not create a dialog")

    # -- identity ----------------------------------------------------------------------------------------

    @property
    def key(self) -> DialogKey:
        """(Call-ID, local tag, remote tag): the dialog ID of RFC 3261 12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def terminated(self) -> bool:
        return self.state == TERMINATED

    def terminate(self) -> None:
        """End the dialog (BYE sent or received, the ACK never came, 481 ...)."""
        self._advance(TERMINATE)

    def _advance(self, event: str) -> None:
        self.state = DIALOG_STATES[self.state, event]

    # -- requests we send (RFC 3261 12.2.1.1) --------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """A new request within the dialog, with the next local CSeq number (RFC 3261 12.2.1.1).

        From, To, Call-ID, CSeq, Max-Forwards 70, Request-URI and Route (loose or strict routing, see
        `next_hop`), our Contact for target-refresh methods (unless `headers` has one), then `headers`, then
        Content-Type. No Via: the stack adds it.

        Raises:
            ValueError: for ACK (use `create_ack`) or CANCEL (built from the request it cancels), or when
                the dialog is terminated.
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is not built by create_request")
        if self.state == TERMINATED:
            raise ValueError(f"cannot send {method} in a terminated dialog")
        if self.local_cseq >= MAX_CSEQ:
            raise ValueError("local CSeq exhausted")
        self.local_cseq += 1
        extra = Headers(headers)
        contact = method in TARGET_REFRESH_METHODS and "Contact" not in extra
        return self._build(method, self.local_cseq, body, content_type, extra, contact=contact)

    def create_ack(self, invite: Request, *, body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK for a 2xx to `invite` (RFC 3261 13.2.2.4).

        Built like any request within the dialog (current remote target and route set, To with the remote
        tag) but with the INVITE's CSeq number, and the INVITE's Authorization and Proxy-Authorization
        headers. The local CSeq does not change. No Via: the caller adds one with a new branch and sends the
        ACK without a transaction.

        Raises:
            ValueError: `invite` is not an INVITE.
        """
        if invite.method != "INVITE":
            raise ValueError(f"an ACK acknowledges an INVITE, not {invite.method}")
        extra = Headers()
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_all(name):
                extra.add(name, value)
        return self._build("ACK", invite.cseq.number, body, content_type, extra, contact=False)

    def _build(
        self, method: str, cseq: int, body: bytes, content_type: str | None, extra: Headers, *, contact: bool
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        headers.add("From", self._local_uri)
        headers.add("To", self._remote_uri)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact:
            headers.add("Contact", str(self.local_contact))
        for name, value in extra:
            headers.add(name, value)
        if content_type is not None:
            headers.set("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def _request_uri_and_routes(self) -> tuple[URI, list[str]]:
        """Request-URI and Route values per RFC 3261 12.2.1.1."""
        if not self.route_set:
            return _request_uri(self.remote_target), []
        first = _route_uri(self.route_set[0])
        if isinstance(first, SipURI) and first.has_param("lr"):
            return _request_uri(self.remote_target), list(self.route_set)
        # Strict routing: the first route becomes the Request-URI, the remote target the last Route.
        return _request_uri(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> SipURI:
        """Where our next request goes (RFC 3261 8.1.2): the first route of the route set (loose or strict),
        else the remote target. Resolve it with `destination`.

        Raises:
            ValueError: the hop is not a sip/sips URI (a tel: remote target cannot be routed).
        """
        if self.route_set:
            return _sip_uri(_route_uri(self.route_set[0]), "route")
        return _sip_uri(self.remote_target, "remote target")

    # -- requests we receive (RFC 3261 12.2.2) -------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Account for a request the peer sent within this dialog, before acting on it.

        Checks and records the remote CSeq and follows a target refresh (the Contact of a re-INVITE, UPDATE
        ...). An ACK is not checked (it repeats its INVITE's number).

        Raises:
            SipError: 481 when the dialog is terminated, 500 "CSeq out of order" when the CSeq number is
                lower than the last one.
        """
        if request.method == "ACK":
            return
        if self.state == TERMINATED:
            raise SipError(481)
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise SipError(500, "CSeq out of order")
        self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target

    # -- responses ---------------------------------------------------------------------------------------

    def receive_response(self, request: Request, response: Response) -> None:
        """Account for a response to a request we sent in this dialog (RFC 3261 12.1.2, 12.2.1.2, 13.2.2.4).

        - An INVITE's 2xx confirms an early dialog; on the UAC side the route set is then recomputed from
          the 2xx's Record-Route. A 300-699 to the INVITE ends an early dialog (the caller ends the other
          early dialogs of the same INVITE).
        - A 2xx to a target-refresh request (and, in an early dialog, a 1xx to the INVITE) with a Contact
          replaces the remote target.
        - An early UAC dialog without a remote tag learns it from the response's To tag.
        - A 481 or 408 to any request ends the dialog (12.2.1.2): check `terminated` afterwards.
        """
        if self.state == TERMINATED:
            return
        status = response.status
        if status in _DIALOG_ENDING:
            self.terminate()
            return
        if self.remote_tag is None and status > 100:
            tag = response.to.tag
            if tag is not None:
                self.remote_tag = tag
                self.remote_uri = self.remote_uri.with_param("tag", tag)
        refresh = 200 <= status < 300 and request.method in TARGET_REFRESH_METHODS
        if request.method == "INVITE" and status > 100:
            early = self.state == EARLY
            refresh = refresh or (early and status < 200)
            self._advance(_input(status))
            if early and self.state == CONFIRMED and self.is_uac:
                self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        if refresh:
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target

    def response_sent(self, request: Request, response: Response) -> None:
        """Account for a response we sent to the peer's request (UAS side, RFC 3261 13.3.1.4).

        The 2xx to the INVITE confirms an early dialog; a 300-699 to the INVITE ends an early dialog.
        """
        if request.method == "INVITE" and response.status > 100:
            self._advance(_input(response.status))

    def __repr__(self) -> str:
        side = "UAC" if self.is_uac else "UAS"
        return f"<Dialog {side} {self.state} key={self.key!r}>"


class DialogTable:
    """The live dialogs of a user agent, found by the dialog ID of a request or response (RFC 3261 12).

    Dialogs are indexed by (Call-ID, local tag), which never changes, so an early UAC dialog that learns its
    remote tag need not be re-added. Several dialogs share that pair when an INVITE forks.
    """

    __slots__ = ("_by_local",)

    def __init__(self) -> None:
        self._by_local: dict[tuple[str, str], list[Dialog]] = {}

    def add(self, dialog: Dialog) -> None:
        """Add a dialog; adding the same object twice is a no-op.

        Raises:
            ValueError: another dialog has the same key.
        """
        dialogs = self._by_local.setdefault((dialog.call_id, dialog.local_tag), [])
        for other in dialogs:
            if other is dialog:
                return
            if other.remote_tag == dialog.remote_tag:
                raise ValueError(f"a dialog with key {dialog.key!r} exists")
        dialogs.append(dialog)

    def remove(self, dialog: Dialog) -> None:
        """Forget a dialog; a dialog that is not in the table is ignored."""
        index = (dialog.call_id, dialog.local_tag)
        dialogs = self._by_local.get(index)
        if dialogs is None:
            return
        dialogs[:] = [d for d in dialogs if d is not dialog]
        if not dialogs:
            del self._by_local[index]

    def find(self, request: Request) -> Dialog | None:
        """The dialog of an incoming in-dialog request: Call-ID, local tag = To tag, remote tag = From tag
        (RFC 3261 12.2.2). None when there is none (answer 481, except for an ACK which is dropped)."""
        local_tag = request.to.tag
        call_id = request.call_id
        if local_tag is None or call_id is None:
            return None
        remote_tag = request.from_.tag
        for dialog in self._by_local.get((call_id, local_tag), ()):
            if dialog.remote_tag == remote_tag:
                return dialog
        return None

    def find_for_response(self, response: Response) -> Dialog | None:
        """The dialog of a response to our request: Call-ID, local tag = From tag, remote tag = To tag; an
        early dialog that has no remote tag yet matches any To tag when no dialog has that one."""
        local_tag = response.from_.tag
        call_id = response.call_id
        if local_tag is None or call_id is None:
            return None
        remote_tag = response.to.tag
        untagged = None
        for dialog in self._by_local.get((call_id, local_tag), ()):
            if dialog.remote_tag == remote_tag:
                return dialog
            if dialog.remote_tag is None:
                untagged = dialog
        return untagged

    def __len__(self) -> int:
        return sum(len(dialogs) for dialogs in self._by_local.values())

    def __iter__(self) -> Iterator[Dialog]:
        for dialogs in list(self._by_local.values()):
            yield from list(dialogs)

    def __contains__(self, dialog: object) -> bool:
        if not isinstance(dialog, Dialog):
            return False
        return any(d is dialog for d in self._by_local.get((dialog.call_id, dialog.local_tag), ()))


def is_in_dialog(request: Request) -> bool:
    """True when the request carries a To tag: it belongs to a dialog (RFC 3261 12.2.2)."""
    return request.to.tag is not None


# -- where requests go (RFC 3261 8.1.2, 19.1.1; RFC 3263 without DNS) ------------------------------------


def destination(uri: SipURI) -> tuple[str, str, int]:
    """(transport, host, port) to send to for a next-hop URI, without DNS (a simplified RFC 3263).

    Transport: the `transport` parameter lower-cased (`tcp` becomes `tls` for a sips URI), else `udp`, or
    `tls` for sips. Host: `maddr` when present, else the host. Port: the URI's, else 5061 for TLS and 5060
    for the rest.
    """
    transport = uri.transport or ("tls" if uri.secure else "udp")
    if uri.secure and transport == "tcp":
        transport = "tls"
    host = uri.param("maddr") or uri.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = uri.port or (5061 if transport == "tls" else 5060)
    return transport, host, port


def request_next_hop(request: Request) -> SipURI:
    """Where a request outside a dialog goes (RFC 3261 8.1.2): its first Route (a preloaded, loose
    outbound proxy) if any, else its Request-URI. Inside a dialog use `Dialog.next_hop`, which also knows
    strict routers.

    Raises:
        ValueError: the hop is not a sip/sips URI.
    """
    route = request.headers.get("Route")
    if route is not None:
        return _sip_uri(_route_uri(route), "route")
    return _sip_uri(request.uri, "Request-URI")
