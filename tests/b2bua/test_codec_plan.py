"""Tests for `pbx.b2bua.codec_plan`: what the B2BUA offers the other side and answers back, and the 488."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pbx.b2bua.codec_plan import answer_for, augment_offer, leg_formats, restrict_offer_to
from pbx.media.dtmf_interwork import LegFormats
from pbx.sip.errors import SipError
from pbx.sip.sdp import MediaDescription, SessionDescription

from .fakes import sdp_body


def media(*formats: tuple[str, str], fmtp: dict[str, str] | None = None) -> MediaDescription:
    body = sdp_body(formats=formats)
    m = SessionDescription.parse(body).media[0]
    if fmtp:
        m = m.with_attributes((*m.attributes, *(("fmtp", f"{pt} {v}") for pt, v in fmtp.items())))
    return m


def maps(m: MediaDescription) -> list[tuple[str, str]]:
    rtpmap = m.rtpmap
    return [(pt, str(rtpmap[pt])) for pt in m.formats]


PCMU = ("0", "PCMU/8000")
PCMA = ("8", "PCMA/8000")
G722 = ("9", "G722/8000")
TE = ("101", "telephone-event/8000")


class AugmentTests(SynchronousTestCase):
    def test_an_offer_with_both_laws_and_events_is_the_same_object(self) -> None:
        offer = media(PCMU, PCMA, TE)
        self.assertIs(augment_offer(offer, None), offer)

    def test_the_other_law_comes_right_after_the_one_offered(self) -> None:
        self.assertEqual(maps(augment_offer(media(G722, PCMU, TE), None)), [G722, PCMU, PCMA, TE])
        self.assertEqual(maps(augment_offer(media(PCMA, TE), None)), [PCMA, PCMU, TE])

    def test_telephone_event_is_added_with_a_free_type(self) -> None:
        out = augment_offer(media(PCMU, PCMA), None)
        self.assertEqual(maps(out), [PCMU, PCMA, TE])
        self.assertEqual(out.fmtp["101"], "0-16")
        taken = media(PCMU, PCMA, ("101", "opus/48000/2"))
        self.assertEqual(maps(augment_offer(taken, None))[-1], ("96", "telephone-event/8000"))

    def test_the_allow_list_is_respected(self) -> None:
        self.assertEqual(maps(augment_offer(media(PCMU), frozenset({"pcmu"}))), [PCMU])
        self.assertEqual(maps(augment_offer(media(PCMU), frozenset({"pcmu", "pcma"}))), [PCMU, PCMA])

    def test_nothing_is_added_to_an_offer_without_g711(self) -> None:
        offer = media(G722)
        self.assertIs(augment_offer(offer, None), offer)


class RestrictTests(SynchronousTestCase):
    def test_a_trunks_codecs_in_its_order_with_conversion(self) -> None:
        self.assertEqual(maps(restrict_offer_to(media(PCMU, G722, TE), ["PCMA", "G722"])), [PCMA, G722, TE])
        self.assertEqual(maps(restrict_offer_to(media(PCMA, PCMU), ["PCMU"])), [PCMU, TE])

    def test_no_codec_of_the_list_is_488(self) -> None:
        with self.assertRaises(SipError) as caught:
            restrict_offer_to(media(G722, TE), ["PCMA", "G729"])
        self.assertEqual(caught.exception.status, 488)


class AnswerTests(SynchronousTestCase):
    def test_an_answer_in_the_offerers_terms_is_unchanged(self) -> None:
        answer = media(PCMU, TE)
        out, offerer, answerer = answer_for(media(PCMU, PCMA, TE), answer)
        self.assertIs(out, answer)
        self.assertEqual(offerer, LegFormats(((0, "pcmu"),), 101))
        self.assertEqual(answerer, LegFormats(((0, "pcmu"),), 101))

    def test_pcma_accepted_for_a_pcmu_offerer_is_answered_as_pcmu(self) -> None:
        out, offerer, answerer = answer_for(media(PCMU), media(PCMA, TE))
        self.assertEqual(maps(out), [PCMU])
        self.assertEqual(offerer, LegFormats(((0, "pcmu"),), None))
        self.assertEqual(answerer, LegFormats(((8, "pcma"),), 101))

    def test_the_offerers_events_stay_when_the_answerer_has_none(self) -> None:
        out, offerer, answerer = answer_for(media(PCMU, PCMA, TE), media(PCMA))
        self.assertEqual(maps(out), [PCMA, TE])
        self.assertEqual(out.fmtp["101"], "0-16")
        self.assertEqual((offerer.telephone_event, answerer.telephone_event), (101, None))

    def test_no_codec_the_offerer_can_be_given_is_488(self) -> None:
        with self.assertRaises(SipError) as caught:
            answer_for(media(PCMU, TE), media(("18", "G729/8000"), TE))
        self.assertEqual(caught.exception.status, 488)
        with self.assertRaises(SipError):
            answer_for(media(G722), media(PCMA))

    def test_leg_formats(self) -> None:
        formats = leg_formats(media(G722, ("13", "CN/8000"), PCMA, TE), info=True)
        self.assertEqual(formats, LegFormats(((9, "g722"), (8, "pcma")), 101, True))
        self.assertEqual(formats.method, "rfc4733")
        self.assertEqual(leg_formats(media(PCMU)).method, "inband")
        self.assertEqual(leg_formats(media(PCMU), info=True).method, "info")
