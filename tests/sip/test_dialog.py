"""Tests for `pbx.sip.dialog`: RFC 3261 section 12 dialogs built from wire messages (UAS and UAC creation,
requests with empty, loose and strict route sets, the ACK for a 2xx, CSeq order, target refresh, states) and
the dialog table. No sockets, no clock."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pbx.sip.dialog import (
    CONFIRMED,
    DIALOG_STATES,
    EARLY,
    FAILURE,
    PROVISIONAL,
    SUCCESS,
    TERMINATE,
    TERMINATED,
    Dialog,
    DialogTable,
    destination,
    is_in_dialog,
    request_next_hop,
)
from pbx.sip.errors import SipError
from pbx.sip.headers import NameAddress
from pbx.sip.message import Request, Response
from pbx.sip.parser import parse_message
from pbx.sip.uri import SipURI, parse_sip_uri, parse_uri

PBX_CONTACT = "<sip:pbx@203.0.113.1:5060>"


def parse_request(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def parse_response(text: str) -> Response:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Response)
    return message


def incoming_invite(
    *, record_route: str = "", cseq: int = 314159, uri: str = "sip:bob@pbx.example.com"
) -> Request:
    """An INVITE from Alice that reached us (the UAS) through two record-routing proxies."""
    rr = (
        record_route
        if record_route
        else "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n"
        "Record-Route: <sip:p0.example.com;lr;transport=tcp>\n"
    )
    return parse_request(
        f"INVITE {uri} SIP/2.0\n"
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\n"
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKalice\n"
        f"{rr}"
        "Max-Forwards: 68\n"
        'From: "Alice" <sip:alice@example.com>;tag=alicetag\n'
        "To: <sip:bob@pbx.example.com>\n"
        "Call-ID: call-a@192.0.2.10\n"
        f"CSeq: {cseq} INVITE\n"
        "Contact: <sip:alice@192.0.2.10:5070;transport=udp>\n"
        "Session-Expires: 1800\n"
        "Content-Length: 0\n"
        "\n"
    )


def outgoing_invite(*, uri: str = "sip:1002@198.51.100.7:5062") -> Request:
    """An INVITE we (the UAC) sent, as it left the stack."""
    return parse_request(
        f"INVITE {uri} SIP/2.0\n"
        "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKours;rport\n"
        "Max-Forwards: 70\n"
        "From: <sip:pbx@pbx.example.com>;tag=pbxtag\n"
        "To: <sip:1002@pbx.example.com>\n"
        "Call-ID: call-b@203.0.113.1\n"
        "CSeq: 20 INVITE\n"
        f"Contact: {PBX_CONTACT}\n"
        'Proxy-Authorization: Digest username="pbx", realm="carrier", nonce="n", uri="sip:x", '
        'response="0123"\n'
        "Content-Length: 0\n"
        "\n"
    )


def response_for(
    request: Request,
    status: int,
    *,
    to_tag: str | None = "bobtag",
    contact: str | None = "<sip:1002@198.51.100.7:5062>",
    record_route: str = "",
) -> Response:
    """A response to `request` as it arrives on the wire."""
    via = "".join(f"Via: {v}\n" for v in request.headers.get_all("Via"))
    to = str(request.headers.get("To")) + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"SIP/2.0 {status} Whatever\n"
        f"{via}"
        f"{record_route}"
        f"From: {request.headers.get('From')}\n"
        f"To: {to}\n"
        f"Call-ID: {request.call_id}\n"
        f"CSeq: {request.cseq}\n" + (f"Contact: {contact}\n" if contact else "") + "Content-Length: 0\n\n"
    )
    return parse_response(text)


def in_dialog_request(method: str, cseq: int, *, contact: str | None = None) -> Request:
    """A request Alice sends in the dialog made by `incoming_invite` (our tag: pbxtag)."""
    return parse_request(
        f"{method} sip:pbx@203.0.113.1:5060 SIP/2.0\n"
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKin" + str(cseq) + "\n"
        'From: "Alice" <sip:alice@example.com>;tag=alicetag\n'
        "To: <sip:bob@pbx.example.com>;tag=pbxtag\n"
        "Call-ID: call-a@192.0.2.10\n"
        f"CSeq: {cseq} {method}\n" + (f"Contact: {contact}\n" if contact else "") + "Content-Length: 0\n\n"
    )


def uas_dialog(status: int = 200, **kwargs: Any) -> tuple[Request, Dialog]:
    invite = incoming_invite(**kwargs)
    return invite, Dialog.create_uas(invite, invite.response(status, to_tag="pbxtag"), PBX_CONTACT)


def uac_dialog(status: int = 200, *, record_route: str = "", **kwargs: Any) -> tuple[Request, Dialog]:
    invite = outgoing_invite()
    response = response_for(invite, status, record_route=record_route, **kwargs)
    return invite, Dialog.create_uac(invite, response)


class UasCreationTests(SynchronousTestCase):
    """RFC 3261 12.1.1."""

    def test_fields_from_request_and_response(self) -> None:
        """Tags, URIs, remote target from the request's Contact, remote CSeq, our Contact; confirmed (2xx)."""
        _, dialog = uas_dialog(200)
        self.assertEqual(dialog.call_id, "call-a@192.0.2.10")
        self.assertEqual(dialog.local_tag, "pbxtag")
        self.assertEqual(dialog.remote_tag, "alicetag")
        self.assertEqual(dialog.key, ("call-a@192.0.2.10", "pbxtag", "alicetag"))
        self.assertEqual(dialog.local_uri, NameAddress.parse("<sip:bob@pbx.example.com>;tag=pbxtag"))
        self.assertEqual(dialog.remote_uri, NameAddress.parse('"Alice" <sip:alice@example.com>;tag=alicetag'))
        self.assertEqual(dialog.remote_target, parse_uri("sip:alice@192.0.2.10:5070;transport=udp"))
        self.assertEqual(dialog.remote_cseq, 314159)
        self.assertEqual(dialog.local_cseq, 0)
        self.assertEqual(dialog.local_contact, PBX_CONTACT)
        self.assertEqual(dialog.state, CONFIRMED)
        self.assertFalse(dialog.is_uac)
        self.assertFalse(dialog.secure)

    def test_route_set_is_record_route_in_order(self) -> None:
        """Every Record-Route value, across header fields and commas, top first."""
        _, dialog = uas_dialog()
        self.assertEqual(
            dialog.route_set,
            ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>", "<sip:p0.example.com;lr;transport=tcp>"],
        )

    def test_provisional_makes_early_dialog(self) -> None:
        _, dialog = uas_dialog(180)
        self.assertEqual(dialog.state, EARLY)

    def test_sips_request_uri_sets_secure(self) -> None:
        invite = incoming_invite(uri="sips:bob@pbx.example.com")
        dialog = Dialog.create_uas(invite, invite.response(200, to_tag="t"), PBX_CONTACT)
        self.assertTrue(dialog.secure)

    def test_response_without_to_tag_or_with_error_status_is_refused(self) -> None:
        invite = incoming_invite()
        self.assertRaises(ValueError, Dialog.create_uas, invite, invite.response(200), PBX_CONTACT)
        self.assertRaises(
            ValueError, Dialog.create_uas, invite, invite.response(486, to_tag="t"), PBX_CONTACT
        )
        self.assertRaises(
            ValueError, Dialog.create_uas, invite, invite.response(100, to_tag="t"), PBX_CONTACT
        )

    def test_request_without_contact_is_a_400(self) -> None:
        invite = incoming_invite()
        invite.headers.remove("Contact")
        with self.assertRaises(SipError) as raised:
            Dialog.create_uas(invite, invite.response(200, to_tag="t"), PBX_CONTACT)
        self.assertEqual(raised.exception.status, 400)


class UacCreationTests(SynchronousTestCase):
    """RFC 3261 12.1.2."""

    RR = "Record-Route: <sip:p2.example.com;lr>\nRecord-Route: <sip:p1.example.com;lr>\n"

    def test_fields_from_request_and_response(self) -> None:
        _, dialog = uac_dialog(200, record_route=self.RR)
        self.assertEqual(dialog.key, ("call-b@203.0.113.1", "pbxtag", "bobtag"))
        self.assertEqual(dialog.local_uri, NameAddress.parse("<sip:pbx@pbx.example.com>;tag=pbxtag"))
        self.assertEqual(dialog.remote_uri, NameAddress.parse("<sip:1002@pbx.example.com>;tag=bobtag"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:1002@198.51.100.7:5062"))
        self.assertEqual(dialog.local_cseq, 20)
        self.assertIsNone(dialog.remote_cseq)
        self.assertEqual(dialog.local_contact, PBX_CONTACT)
        self.assertEqual(dialog.state, CONFIRMED)
        self.assertTrue(dialog.is_uac)

    def test_route_set_is_record_route_reversed(self) -> None:
        _, dialog = uac_dialog(200, record_route=self.RR)
        self.assertEqual(dialog.route_set, ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])

    def test_early_dialog_without_contact_targets_the_request_uri(self) -> None:
        invite, dialog = uac_dialog(180, contact=None)
        self.assertEqual(dialog.state, EARLY)
        self.assertEqual(dialog.remote_target, invite.uri)

    def test_2xx_without_contact_is_refused(self) -> None:
        invite = outgoing_invite()
        self.assertRaises(ValueError, Dialog.create_uac, invite, response_for(invite, 200, contact=None))

    def test_request_without_from_tag_is_refused(self) -> None:
        invite = outgoing_invite()
        invite.headers.set("From", "<sip:pbx@pbx.example.com>")
        self.assertRaises(ValueError, Dialog.create_uac, invite, response_for(invite, 200))


class CreateRequestTests(SynchronousTestCase):
    """RFC 3261 12.2.1.1: headers, CSeq and routing of requests within a dialog."""

    def test_headers_and_cseq_increment(self) -> None:
        """From/To with tags, Call-ID, Max-Forwards 70, CSeq counting up from the local CSeq, no Via."""
        _, dialog = uac_dialog(200)
        bye = dialog.create_request("BYE")
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(str(bye.cseq), "21 BYE")
        self.assertEqual(bye.from_.tag, "pbxtag")
        self.assertEqual(bye.to.tag, "bobtag")
        self.assertEqual(bye.call_id, "call-b@203.0.113.1")
        self.assertEqual(bye.headers.get("Max-Forwards"), "70")
        self.assertNotIn("Via", bye.headers)
        self.assertNotIn("Contact", bye.headers)
        self.assertEqual(str(dialog.create_request("INFO").cseq), "22 INFO")
        self.assertEqual(dialog.local_cseq, 22)

    def test_uas_side_starts_at_one(self) -> None:
        _, dialog = uas_dialog()
        self.assertEqual(str(dialog.create_request("BYE").cseq), "1 BYE")

    def test_target_refresh_methods_carry_our_contact(self) -> None:
        _, dialog = uas_dialog()
        for method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            self.assertEqual(dialog.create_request(method).headers.get("Contact"), PBX_CONTACT, method)
        custom = dialog.create_request("INVITE", headers=[("Contact", "<sip:other@h>")])
        self.assertEqual(custom.headers.get_all("Contact"), ["<sip:other@h>"])

    def test_body_content_type_and_extra_headers(self) -> None:
        _, dialog = uac_dialog()
        info = dialog.create_request(
            "INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay", headers=[("X-A", "1")]
        )
        self.assertEqual(info.body, b"Signal=5\r\n")
        self.assertEqual(info.headers.get("Content-Type"), "application/dtmf-relay")
        self.assertEqual(info.headers.get("X-A"), "1")
        reparsed = parse_message(info.to_bytes())
        assert isinstance(reparsed, Request)
        self.assertEqual(reparsed.body, b"Signal=5\r\n")

    def test_empty_route_set(self) -> None:
        """Request-URI = remote target, no Route; the next hop is the remote target."""
        _, dialog = uac_dialog()
        bye = dialog.create_request("BYE")
        self.assertEqual(bye.uri, parse_uri("sip:1002@198.51.100.7:5062"))
        self.assertNotIn("Route", bye.headers)
        self.assertEqual(dialog.next_hop(), parse_sip_uri("sip:1002@198.51.100.7:5062"))

    def test_loose_route_set(self) -> None:
        """First route has lr: Request-URI = remote target, Route = route set; next hop = first route."""
        _, dialog = uas_dialog()
        bye = dialog.create_request("BYE")
        self.assertEqual(bye.uri, parse_uri("sip:alice@192.0.2.10:5070;transport=udp"))
        self.assertEqual(
            bye.headers.get_all("Route"),
            ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>", "<sip:p0.example.com;lr;transport=tcp>"],
        )
        self.assertEqual(dialog.next_hop(), parse_sip_uri("sip:p2.example.com;lr"))
        self.assertEqual(destination(dialog.next_hop()), ("udp", "p2.example.com", 5060))

    def test_strict_route_set(self) -> None:
        """First route without lr: Request-URI = that URI (headers stripped), Route = rest + remote target."""
        rr = "Record-Route: <sip:strict.example.com:5070?X-Foo=bar>, <sip:p1.example.com;lr>\n"
        _, dialog = uas_dialog(record_route=rr)
        bye = dialog.create_request("BYE")
        self.assertEqual(bye.uri, parse_uri("sip:strict.example.com:5070"))
        self.assertEqual(
            bye.headers.get_all("Route"),
            ["<sip:p1.example.com;lr>", "<sip:alice@192.0.2.10:5070;transport=udp>"],
        )
        self.assertEqual(destination(dialog.next_hop()), ("udp", "strict.example.com", 5070))

    def test_ack_and_cancel_are_refused(self) -> None:
        _, dialog = uac_dialog()
        self.assertRaises(ValueError, dialog.create_request, "ACK")
        self.assertRaises(ValueError, dialog.create_request, "CANCEL")
        self.assertEqual(dialog.local_cseq, 20)

    def test_terminated_dialog_sends_nothing(self) -> None:
        _, dialog = uac_dialog()
        dialog.terminate()
        self.assertEqual(dialog.state, TERMINATED)
        self.assertRaises(ValueError, dialog.create_request, "BYE")


class CreateAckTests(SynchronousTestCase):
    """RFC 3261 13.2.2.4: the ACK for a 2xx."""

    def test_ack_for_2xx(self) -> None:
        """Same CSeq number, ACK method, in-dialog From/To/Call-ID/Route/Request-URI, auth copied."""
        rr = "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n"
        invite, dialog = uac_dialog(200, record_route=rr)
        ack = dialog.create_ack(invite, body=b"v=0\r\n", content_type="application/sdp")
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(str(ack.cseq), "20 ACK")
        self.assertEqual(ack.uri, parse_uri("sip:1002@198.51.100.7:5062"))
        self.assertEqual(ack.headers.get_all("Route"), ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
        self.assertEqual(ack.from_.tag, "pbxtag")
        self.assertEqual(ack.to.tag, "bobtag")
        self.assertEqual(ack.call_id, invite.call_id)
        self.assertEqual(ack.headers.get("Proxy-Authorization"), invite.headers.get("Proxy-Authorization"))
        self.assertEqual(ack.headers.get("Content-Type"), "application/sdp")
        self.assertEqual(ack.body, b"v=0\r\n")
        self.assertNotIn("Contact", ack.headers)
        self.assertNotIn("Via", ack.headers)
        self.assertEqual(dialog.local_cseq, 20)  # unchanged

    def test_ack_for_reinvite_uses_its_cseq(self) -> None:
        _, dialog = uac_dialog()
        reinvite = dialog.create_request("INVITE")
        dialog.receive_response(reinvite, response_for(reinvite, 200, to_tag=None))
        self.assertEqual(str(dialog.create_ack(reinvite).cseq), "21 ACK")

    def test_only_for_invite(self) -> None:
        _, dialog = uac_dialog()
        self.assertRaises(ValueError, dialog.create_ack, dialog.create_request("BYE"))


class ReceiveRequestTests(SynchronousTestCase):
    """RFC 3261 12.2.2: CSeq order and target refresh of incoming requests."""

    def test_lower_cseq_is_a_500(self) -> None:
        _, dialog = uas_dialog(cseq=100)
        dialog.receive_request(in_dialog_request("INFO", 101))
        self.assertEqual(dialog.remote_cseq, 101)
        with self.assertRaises(SipError) as raised:
            dialog.receive_request(in_dialog_request("INFO", 100))
        self.assertEqual((raised.exception.status, raised.exception.reason), (500, "CSeq out of order"))
        self.assertEqual(dialog.remote_cseq, 101)

    def test_first_request_sets_empty_remote_cseq(self) -> None:
        """A UAC dialog learns the peer's CSeq space from its first request, whatever the number."""
        _, dialog = uac_dialog()
        request = parse_request(
            "BYE sip:pbx@203.0.113.1:5060 SIP/2.0\n"
            "Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKbye\n"
            "From: <sip:1002@pbx.example.com>;tag=bobtag\n"
            "To: <sip:pbx@pbx.example.com>;tag=pbxtag\n"
            "Call-ID: call-b@203.0.113.1\n"
            "CSeq: 5 BYE\n"
            "Content-Length: 0\n\n"
        )
        dialog.receive_request(request)
        self.assertEqual(dialog.remote_cseq, 5)

    def test_ack_is_not_ordered(self) -> None:
        _, dialog = uas_dialog(cseq=100)
        dialog.receive_request(in_dialog_request("INFO", 101))
        dialog.receive_request(in_dialog_request("ACK", 100))
        self.assertEqual(dialog.remote_cseq, 101)

    def test_reinvite_refreshes_remote_target(self) -> None:
        _, dialog = uas_dialog(cseq=100)
        dialog.receive_request(in_dialog_request("INVITE", 101, contact="<sip:alice@192.0.2.99:6000>"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:alice@192.0.2.99:6000"))
        self.assertEqual(dialog.create_request("BYE").uri, parse_uri("sip:alice@192.0.2.99:6000"))

    def test_update_refreshes_but_info_does_not(self) -> None:
        _, dialog = uas_dialog(cseq=100)
        dialog.receive_request(in_dialog_request("INFO", 101, contact="<sip:x@192.0.2.1>"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:alice@192.0.2.10:5070;transport=udp"))
        dialog.receive_request(in_dialog_request("UPDATE", 102, contact="<sip:y@192.0.2.2>"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:y@192.0.2.2"))

    def test_terminated_dialog_answers_481(self) -> None:
        _, dialog = uas_dialog(cseq=100)
        dialog.terminate()
        with self.assertRaises(SipError) as raised:
            dialog.receive_request(in_dialog_request("BYE", 101))
        self.assertEqual(raised.exception.status, 481)


class ReceiveResponseTests(SynchronousTestCase):
    """RFC 3261 12.1.2, 12.2.1.2, 13.2.2.4: responses move the dialog."""

    def test_early_to_confirmed_on_2xx_recomputes_route_set(self) -> None:
        invite, dialog = uac_dialog(180, record_route="Record-Route: <sip:old.example.com;lr>\n")
        self.assertEqual(dialog.state, EARLY)
        ok = response_for(
            invite,
            200,
            contact="<sip:1002@198.51.100.8>",
            record_route="Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n",
        )
        dialog.receive_response(invite, ok)
        self.assertEqual(dialog.state, CONFIRMED)
        self.assertEqual(dialog.route_set, ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
        self.assertEqual(dialog.remote_target, parse_uri("sip:1002@198.51.100.8"))

    def test_2xx_to_prack_does_not_confirm(self) -> None:
        _, dialog = uac_dialog(183)
        prack = dialog.create_request("PRACK")
        dialog.receive_response(prack, response_for(prack, 200, to_tag=None))
        self.assertEqual(dialog.state, EARLY)

    def test_early_uac_dialog_learns_remote_tag(self) -> None:
        invite, dialog = uac_dialog(180, to_tag=None)
        self.assertIsNone(dialog.remote_tag)
        dialog.receive_response(invite, response_for(invite, 183, to_tag="late"))
        self.assertEqual(dialog.remote_tag, "late")
        self.assertEqual(dialog.remote_uri.tag, "late")
        self.assertEqual(dialog.create_request("UPDATE").to.tag, "late")

    def test_failure_ends_early_dialog(self) -> None:
        invite, dialog = uac_dialog(180)
        dialog.receive_response(invite, response_for(invite, 486))
        self.assertEqual(dialog.state, TERMINATED)

    def test_failed_reinvite_keeps_confirmed_dialog(self) -> None:
        _, dialog = uac_dialog()
        reinvite = dialog.create_request("INVITE")
        dialog.receive_response(reinvite, response_for(reinvite, 488, to_tag=None))
        self.assertEqual(dialog.state, CONFIRMED)

    def test_481_and_408_end_the_dialog(self) -> None:
        for status in (481, 408):
            _, dialog = uac_dialog()
            info = dialog.create_request("INFO")
            dialog.receive_response(info, response_for(info, status, to_tag=None))
            self.assertEqual(dialog.state, TERMINATED, status)

    def test_2xx_to_reinvite_refreshes_remote_target(self) -> None:
        _, dialog = uac_dialog()
        reinvite = dialog.create_request("INVITE")
        dialog.receive_response(reinvite, response_for(reinvite, 200, contact="<sip:1002@198.51.100.9:7000>"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:1002@198.51.100.9:7000"))

    def test_2xx_to_info_does_not_refresh(self) -> None:
        _, dialog = uac_dialog()
        info = dialog.create_request("INFO")
        dialog.receive_response(info, response_for(info, 200, contact="<sip:elsewhere@192.0.2.1>"))
        self.assertEqual(dialog.remote_target, parse_uri("sip:1002@198.51.100.7:5062"))

    def test_uas_response_sent_confirms_or_ends(self) -> None:
        invite, dialog = uas_dialog(180)
        dialog.response_sent(invite, invite.response(200, to_tag="pbxtag"))
        self.assertEqual(dialog.state, CONFIRMED)
        invite, dialog = uas_dialog(183)
        dialog.response_sent(invite, invite.response(603, to_tag="pbxtag"))
        self.assertEqual(dialog.state, TERMINATED)


class StateTableTests(SynchronousTestCase):
    def test_table_is_exhaustive(self) -> None:
        for state in (EARLY, CONFIRMED, TERMINATED):
            for event in (PROVISIONAL, SUCCESS, FAILURE, TERMINATE):
                self.assertIn((state, event), DIALOG_STATES)

    def test_terminated_is_final(self) -> None:
        for (state, _), nxt in DIALOG_STATES.items():
            if state == TERMINATED:
                self.assertEqual(nxt, TERMINATED)


class DialogTableTests(SynchronousTestCase):
    """Matching incoming requests (To tag local) and responses (From tag local) to dialogs."""

    def test_find_incoming_request(self) -> None:
        table = DialogTable()
        _, dialog = uas_dialog()
        table.add(dialog)
        self.assertEqual(len(table), 1)
        self.assertIs(table.find(in_dialog_request("BYE", 314160)), dialog)

    def test_request_with_other_tags_or_call_id_is_not_found(self) -> None:
        table = DialogTable()
        _, dialog = uas_dialog()
        table.add(dialog)
        request = in_dialog_request("BYE", 314160)
        request.headers.set("From", "<sip:alice@example.com>;tag=other")
        self.assertIsNone(table.find(request))
        request = in_dialog_request("BYE", 314160)
        request.headers.set("Call-ID", "other")
        self.assertIsNone(table.find(request))
        self.assertIsNone(table.find(incoming_invite()))  # no To tag

    def test_find_for_response(self) -> None:
        table = DialogTable()
        _, dialog = uac_dialog()
        table.add(dialog)
        bye = dialog.create_request("BYE")
        self.assertIs(table.find_for_response(response_for(bye, 200, to_tag=None)), dialog)
        other = response_for(outgoing_invite(), 200, to_tag="otherfork")
        self.assertIsNone(table.find_for_response(other))

    def test_forked_early_dialogs_and_untagged_dialog(self) -> None:
        """Two forks share Call-ID and local tag; a dialog without remote tag catches an unknown To tag."""
        table = DialogTable()
        invite = outgoing_invite()
        fork_a = Dialog.create_uac(invite, response_for(invite, 180, to_tag="a"))
        fork_b = Dialog.create_uac(invite, response_for(invite, 180, to_tag="b"))
        table.add(fork_a)
        table.add(fork_b)
        self.assertIs(table.find_for_response(response_for(invite, 200, to_tag="b")), fork_b)
        self.assertIs(table.find_for_response(response_for(invite, 200, to_tag="a")), fork_a)
        self.assertIsNone(table.find_for_response(response_for(invite, 200, to_tag="c")))
        untagged = Dialog.create_uac(invite, response_for(invite, 180, to_tag=None))
        table.add(untagged)
        self.assertIs(table.find_for_response(response_for(invite, 200, to_tag="c")), untagged)
        self.assertEqual(len(table), 3)
        self.assertEqual(set(map(id, table)), {id(fork_a), id(fork_b), id(untagged)})

    def test_add_remove(self) -> None:
        table = DialogTable()
        _, dialog = uas_dialog()
        table.add(dialog)
        table.add(dialog)  # same object: no-op
        self.assertEqual(len(table), 1)
        self.assertIn(dialog, table)
        _, twin = uas_dialog()
        self.assertRaises(ValueError, table.add, twin)
        table.remove(dialog)
        table.remove(dialog)  # already gone: no-op
        self.assertEqual(len(table), 0)
        self.assertNotIn(dialog, table)
        self.assertIsNone(table.find(in_dialog_request("BYE", 314160)))

    def test_is_in_dialog(self) -> None:
        self.assertTrue(is_in_dialog(in_dialog_request("BYE", 1)))
        self.assertFalse(is_in_dialog(incoming_invite()))


class DestinationTests(SynchronousTestCase):
    """Next hop URI -> (transport, host, port), without DNS."""

    def test_defaults(self) -> None:
        self.assertEqual(destination(parse_sip_uri("sip:h.example.com")), ("udp", "h.example.com", 5060))
        self.assertEqual(destination(parse_sip_uri("sips:h.example.com")), ("tls", "h.example.com", 5061))

    def test_transport_port_and_maddr(self) -> None:
        self.assertEqual(destination(parse_sip_uri("sip:h:5080;transport=TCP")), ("tcp", "h", 5080))
        self.assertEqual(destination(parse_sip_uri("sip:h;transport=tls")), ("tls", "h", 5061))
        self.assertEqual(destination(parse_sip_uri("sips:h;transport=tcp")), ("tls", "h", 5061))
        self.assertEqual(destination(parse_sip_uri("sip:h:5070;maddr=192.0.2.5")), ("udp", "192.0.2.5", 5070))
        self.assertEqual(destination(parse_sip_uri("sip:[2001:db8::1]:5062")), ("udp", "2001:db8::1", 5062))

    def test_request_next_hop(self) -> None:
        invite = outgoing_invite()
        self.assertEqual(request_next_hop(invite), invite.uri)
        invite.headers.add("Route", "<sip:outbound.example.com;lr>")
        hop = request_next_hop(invite)
        self.assertIsInstance(hop, SipURI)
        self.assertEqual(hop, parse_sip_uri("sip:outbound.example.com;lr"))

    def test_tel_target_cannot_be_routed(self) -> None:
        _, dialog = uac_dialog(contact="<tel:+15551234>")
        self.assertRaises(ValueError, dialog.next_hop)
