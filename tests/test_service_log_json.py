"""JSON log lines (pbx.service.log_json): one object per line, with the call's ID and tenant."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.logger import FileLogObserver, Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pbx.service.log_json import JsonLogLines, LogContext, call_fields
from tests.b2bua.fakes import TENANT, Harness


def line(event: dict, context: LogContext | None = None) -> dict:
    text = JsonLogLines(context)(event)
    assert text is not None and text.endswith("\n") and text.count("\n") == 1
    return json.loads(text)


class JsonLinesTests(SynchronousTestCase):
    def test_a_plain_event(self) -> None:
        out = line({"log_format": "Hello {who}", "who": "you", "log_level": LogLevel.warn,
                    "log_namespace": "pbx.x", "log_time": 0.5, "obj": object()})  # fmt: skip
        self.assertEqual(out, {"time": "1970-01-01T00:00:00.500+00:00", "level": "warn", "namespace": "pbx.x",
                               "text": "Hello you", "who": "you"})  # fmt: skip

    def test_a_b2bua_line_gets_the_tenant_from_the_live_call(self) -> None:
        context = LogContext()
        context.calls = {"c1": type("C", (), {"tenant": "acme"})()}
        out = line(
            {"log_format": "Call {id}: x", "id": "c1", "log_namespace": "pbx.b2bua.b2bua.B2BUA"}, context
        )
        self.assertEqual((out["call_id"], out["tenant"]), ("c1", "acme"))
        ended = line({"log_format": "y", "id": "c2", "tenant": "t", "log_namespace": "pbx.b2bua.b2bua.B2BUA"})
        self.assertEqual((ended["call_id"], ended["tenant"]), ("c2", "t"))
        self.assertNotIn("call_id", line({"log_format": "z", "id": "r", "log_namespace": "pbx.registrar"}))

    def test_a_failure_has_its_traceback(self) -> None:
        try:
            raise ValueError("bad")
        except ValueError:
            from twisted.python.failure import Failure

            failure = Failure()
        out = line({"log_format": "oops", "log_failure": failure, "log_namespace": "pbx"})
        self.assertIn("ValueError: bad", out["traceback"])

    def test_lines_logged_by_a_live_call_carry_its_id_and_tenant(self) -> None:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        h = Harness.build(path, "dial 1002")
        h.register_1002()
        h.place_call()
        (call,) = h.b2bua.calls.values()
        output = io.StringIO()
        observer = FileLogObserver(output, JsonLogLines())
        globalLogPublisher.addObserver(observer)
        try:
            call._log.info("Call {id}: something", id=call.id)  # the source is the call itself
            Logger(namespace="pbx.other").info("unrelated")
        finally:
            globalLogPublisher.removeObserver(observer)
        lines = [json.loads(x) for x in output.getvalue().splitlines()]
        self.assertEqual((lines[0]["call_id"], lines[0]["tenant"]), (call.id, TENANT))
        self.assertNotIn("call_id", lines[1])
        self.assertEqual(call_fields({"log_source": call.legs[0]}, None), (call.id, TENANT))
