"""The `dialog` event package's body (RFC 4235, `pbx.sip.events.dialog_info`): well-formed, escaped,
round-trips."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.events.dialog_info import NAMESPACE, DialogEntry, DialogInfo, DialogInfoError


def test_an_idle_resource_has_no_dialog() -> None:
    info = DialogInfo("sip:1002@example.com", 0)
    text = info.to_bytes()
    root = ElementTree.fromstring(text)
    assert root.tag == f"{{{NAMESPACE}}}dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == (
        "0",
        "full",
        "sip:1002@example.com",
    )
    assert DialogInfo.parse(text) == info and info.idle


def test_a_ringing_dialog_shows_the_caller() -> None:
    entry = DialogEntry(
        id="c1",
        state="early",
        direction="recipient",
        call_id="c1@pbx",
        remote_identity="sip:1001@example.com",
        remote_display='Alice "A" <&>',
        local_identity="sip:1002@example.com",
    )
    info = DialogInfo("sip:1002@example.com", 3, (entry,))
    text = info.to_bytes()
    assert b"<state>early</state>" in text
    assert b"&lt;&amp;&gt;" in text
    assert DialogInfo.parse(text) == info
    assert not info.idle


def test_terminated_dialogs_are_idle() -> None:
    assert DialogInfo("sip:1@x", 1, (DialogEntry("a", "terminated"),)).idle


@pytest.mark.parametrize(
    "data",
    [
        b"<dialog-info",
        b'<other xmlns="urn:ietf:params:xml:ns:dialog-info" version="1"/>',
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="x"/>',
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1">'
        b'<dialog id="a"><state>ringing</state></dialog></dialog-info>',
    ],
)
def test_bad_documents_are_refused(data: bytes) -> None:
    with pytest.raises(DialogInfoError):
        DialogInfo.parse(data)


def test_unknown_states_and_directions_are_refused() -> None:
    with pytest.raises(DialogInfoError):
        DialogEntry("a", "busy")
    with pytest.raises(DialogInfoError):
        DialogEntry("a", "early", direction="sideways")


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@given(_text, _text, st.integers(0, 2**31))
def test_any_display_name_and_identity_round_trip(display: str, identity: str, version: int) -> None:
    entry = DialogEntry("d", "confirmed", "initiator", "", identity.strip(), display, "")
    info = DialogInfo("sip:701@example.com", version, (entry,))
    parsed = DialogInfo.parse(info.to_bytes())
    assert parsed.version == version
    assert parsed.dialogs[0].remote_display == (display if identity.strip() else "")
