"""A call's trace (the JSON of `pbx.b2bua.trace.CallTrace.as_dict`) drawn as a ladder in the terminal.

One column per party: the caller, the PBX, then each outbound leg in the order it started. Each SIP message is
an arrow between its party and the PBX, labelled with its method or status; the peer and the full first line
follow on the right. Dialplan actions are marked `*` on the PBX's column with the template and line that
chose them (`main.j2:27`); media, timers, renders and leg failures are notes on that column. Time runs down,
in seconds from the caller's INVITE.

    time      caller 1001         PBX                 leg1 1002
    +0.000    |-----INVITE------->|                   |            UDP 127.0.0.1:5061  INVITE sip:1002@...
    +0.001    |                   * main.j2:27  dial 1002 timeout=20
    +0.002    |                   |-----INVITE------->|            UDP 127.0.0.1:5062  INVITE sip:1002@...

Pure text in, lines out: no terminal control, nothing read from the network here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

TIME_WIDTH = 10
MARKS = {"action": "*", "media": "~", "timer": "!", "leg": "x", "call": "=", "render": ".", "note": "-"}


def _label(event: Mapping[str, Any]) -> str:
    line = str(event.get("line", ""))
    if line.startswith("SIP/2.0 "):
        return line[8:]
    return line.split(" ", 1)[0]


def _arrow(width: int, label: str, rightwards: bool) -> str:
    """`width` characters: `---LABEL--->` (or `<---LABEL---`)."""
    inner = width - 1
    text = label[: max(0, inner - 4)]
    pad = inner - len(text)
    left = pad // 2
    body = "-" * left + text + "-" * (pad - left)
    return body + ">" if rightwards else "<" + body


class Ladder:
    """Draws one trace; `width` is the width of one party's column."""

    def __init__(self, trace: Mapping[str, Any], *, width: int = 20, headers: bool = False) -> None:
        self.trace = trace
        self.width = max(12, width)
        self.headers = headers
        parties: Sequence[Mapping[str, str]] = trace.get("parties") or [{"id": "caller", "label": "caller"}]
        self.columns: list[tuple[str, str]] = [
            (str(parties[0].get("id")), f"caller {parties[0].get('label', '')}")
        ]
        self.columns.append(("pbx", "PBX"))
        for party in parties[1:]:
            self.columns.append((str(party.get("id")), f"{party.get('id')} {party.get('label', '')}"))
        self._index = {pid: i for i, (pid, _) in enumerate(self.columns)}

    def _center(self, column: int) -> int:
        return TIME_WIDTH + column * self.width + self.width // 2

    def _blank(self) -> list[str]:
        line = [" "] * (TIME_WIDTH + len(self.columns) * self.width)
        for i in range(len(self.columns)):
            line[self._center(i)] = "|"
        return line

    def lines(self) -> Iterator[str]:
        """The header, then one line per event (more with `headers`), then the summary."""
        t = self.trace
        yield (
            f"Call {t.get('call_id')}  tenant {t.get('tenant')}  {t.get('caller')} -> {t.get('dialed')}  "
            + ("(in progress)" if t.get("active") else f"ended: {t.get('cause')} (status {t.get('status')})")
        )
        head = [" "] * (TIME_WIDTH + len(self.columns) * self.width)
        head[:4] = list("time")
        for i, (_, name) in enumerate(self.columns):
            text = name[: self.width - 2]
            start = self._center(i) - len(text) // 2
            head[start : start + len(text)] = list(text)
        yield "".join(head).rstrip()
        yield "".join(self._blank()).rstrip()
        began = float(t.get("started_at") or 0.0)
        for event in t.get("events", ()):
            yield from self._event(event, began)
        dropped = t.get("dropped_events") or 0
        if dropped:
            yield f"({dropped} more events were not kept: the trace reached its cap)"

    def _event(self, event: Mapping[str, Any], start: float) -> Iterator[str]:
        when = f"+{float(event.get('t', start)) - start:.3f}"
        canvas = self._blank()
        canvas[: len(when)] = list(when)
        pbx = self._center(1)
        kind = event.get("kind")
        if kind == "sip":
            column = self._index.get(str(event.get("party")), 0)
            a, b = sorted((column, 1))
            left, right = self._center(a), self._center(b)
            inbound = event.get("dir") == "in"
            rightwards = (column < 1) == inbound  # from the caller, or to a leg
            canvas[left + 1 : right] = list(_arrow(right - left - 1, _label(event), rightwards))
            text = "".join(canvas).rstrip()
            yield f"{text}  {event.get('peer', '')}  {event.get('line', '')}"
            if self.headers:
                indent = " " * (TIME_WIDTH + 2)
                for name, value in (event.get("headers") or {}).items():
                    yield f"{indent}{name}: {value}"
                body = event.get("body")
                if body:
                    for line in str(body).splitlines():
                        yield f"{indent}  {line}"
            return
        mark = MARKS.get(str(kind), "-")
        if kind == "action":
            where = f"{event.get('template', '?')}:{event.get('lineno', 0)}"
            text = f"{mark} {where}  {event.get('text', '')}"
        else:
            text = f"{mark} {event.get('text', '')}"
        prefix = "".join(canvas[:pbx])
        yield prefix + text


def render_ladder(trace: Mapping[str, Any], *, width: int = 20, headers: bool = False) -> str:
    """The whole ladder as text (lines joined, ending with a newline)."""
    return "\n".join(Ladder(trace, width=width, headers=headers).lines()) + "\n"


def render_list(traces: Sequence[Mapping[str, Any]]) -> str:
    """The kept traces, one line each (active calls first)."""
    out = [f"{'call-id':<44} {'tenant':<10} {'caller':<12} {'dialed':<12} {'status':<8} cause"]
    for t in traces:
        status = "active" if t.get("active") else str(t.get("status"))
        out.append(
            f"{str(t.get('call_id'))[:44]:<44} {str(t.get('tenant'))[:10]:<10} "
            f"{str(t.get('caller'))[:12]:<12} {str(t.get('dialed'))[:12]:<12} {status:<8} "
            f"{t.get('cause') or ''}"
        )
    out.append(f"{len(traces)} trace(s)")
    return "\n".join(out) + "\n"
