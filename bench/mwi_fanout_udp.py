"""MWI fan-out over real UDP: 1,000 SIPp phones subscribed to a live PBX, NOTIFYs per second when messages
arrive, and the PBX's CPU per NOTIFY.

The PBX is the real one, built in this process by `pbx.service.build` from a generated config (UDP on
127.0.0.1, sip_trace off, SQLite in a temp data directory, N extensions 10000... with a box each, and a
general box 9000 whose `phones` are all of them), on the epoll reactor. SIPp (`scenarios/mwi_subscriber.xml`)
subscribes every phone with digest authentication and answers each NOTIFY with 200. Once all are subscribed,
each round commits one new message (the WAV written before the clock starts) and waits until every NOTIFY it
caused is answered:

- `shared`: a message in box 9000 -> N NOTIFYs (one per phone);
- `own`: a message in each phone's own box -> N NOTIFYs.

Per round it prints the wall time from the first commit (the index write in SQLite included) until the last
200 came back (NOTIFYs per second)
and the PBX process's CPU meanwhile (user + system, every thread: the reactor and the SQLite writer) per
NOTIFY. SIPp runs in its own process (not counted). Bounded: SIPp has `-timeout`, each round a deadline.

    python bench/mwi_fanout_udp.py                      # 1,000 phones, 3 rounds of each shape
    python bench/mwi_fanout_udp.py --phones 500 --rounds 1
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(1, str(BENCH))

from common import HOST, SIPP_BUFFER, executable, free_port  # noqa: E402


def config_text(port: int, phones: int, data_dir: Path) -> str:
    lines = [
        f'[pbx]\ndata_dir = "{data_dir}"\nsip_trace = false\n',
        f'[[sip.listen]]\ntransport = "udp"\nhost = "{HOST}"\nport = {port}\n',
        "[security]\nmax_auth_failures = 1000\nmax_account_failures = 100000\n",
        "[mwi]\nmin_expires = 60\nmax_expires = 3600\ndefault_expires = 3600\n",
        f'[tenants.default]\ndomain = "localhost"\naliases = ["{HOST}"]\n',
    ]
    numbers = [str(10000 + i) for i in range(phones)]
    for n in numbers:
        lines.append(f'[tenants.default.extensions.{n}]\npassword = "pw{n}"\n')
        lines.append(f'[tenants.default.mailboxes.{n}]\npin = "1234"\n')
    lines.append(
        f'[tenants.default.mailboxes.9000]\npin = "9000"\nphones = [{", ".join(map(repr, numbers))}]\n'
    )
    return "\n".join(lines).replace("'", '"')


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="SUBSCRIBEs per second while subscribing")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory, SIPp's errors, a PBX log"
    )
    args = parser.parse_args()

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner

    from pbx.config import load_config
    from pbx.media.wav import write_pcm_atomic
    from pbx.service import build, when_ready

    work = Path(tempfile.mkdtemp(prefix="pbx-mwi-udp-"))
    if args.keep:
        from twisted.logger import textFileLogObserver

        log = open(work / "pbx.log", "w")  # noqa: SIM115  (closed with the process)
        globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)
        print(f"work directory: {work}")
    else:
        globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    port = free_port()
    path = work / "pbx.toml"
    path.write_text(config_text(port, args.phones, work / "data"))
    (work / "dialplans" / "default").mkdir(parents=True)
    config = load_config(path)
    top = build(config, reactor)
    voicemail = next(s for s in top if hasattr(s, "mailboxes") and hasattr(s, "ready"))
    mwi = next(s for s in top if hasattr(s, "mwi"))
    mailboxes, notifier = voicemail.mailboxes, mwi.mwi.notifier
    csv = work / "phones.csv"
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{10000 + i};[authentication username={10000 + i} password=pw{10000 + i}]\n"
            for i in range(args.phones)
        )
    )
    sipp: subprocess.Popen[bytes] | None = None
    results: list[str] = []
    state: dict[str, Any] = {}

    def subscribed() -> bool:
        return len(notifier) >= args.phones

    def settled() -> bool:
        return all(
            not s._in_flight and not s._queued for subs in notifier._by_resource.values() for s in subs
        )

    def wait(condition: Any, timeout: float) -> Any:
        from twisted.internet.defer import Deferred

        done: Deferred[None] = Deferred()
        deadline = time.monotonic() + timeout

        def check() -> None:
            if condition():
                loop.stop()
                done.callback(None)
            elif time.monotonic() > deadline:
                loop.stop()
                done.errback(TimeoutError(f"{condition.__name__} not reached in {timeout} s"))

        loop = LoopingCall(check)
        loop.clock = reactor
        loop.start(0.002)
        return done

    def prepared(shape: str) -> list[tuple[str, Path]]:
        boxes = ["9000"] if shape == "shared" else [str(10000 + i) for i in range(args.phones)]
        found = []
        for box in boxes:
            audio = mailboxes.prepare("default", box)
            write_pcm_atomic(audio, b"\0\0" * 800)
            found.append((box, audio))
        return found

    async def run() -> None:
        nonlocal sipp
        await when_ready(top)
        sipp = subprocess.Popen(
            [
                executable("sipp"), "-nostdin", f"{HOST}:{port}",
                "-sf", str(BENCH / "scenarios" / "mwi_subscriber.xml"),
                "-inf", str(csv),
                "-t", "u1", "-i", HOST, "-p", str(free_port()),
                "-m", str(args.phones), "-l", str(args.phones), "-r", str(args.rate),
                "-buff_size", str(SIPP_BUFFER),
                "-timeout", "600s",
                *(["-trace_err", "-error_file", str(work / "sipp_err.log")] if args.keep else []),
            ],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await wait(subscribed, 60 + args.phones / args.rate * 3)
        await wait(settled, 30)
        for shape in ("shared", "own"):
            for round_ in range(args.rounds):
                batch = prepared(shape)
                started, started_cpu = time.monotonic(), cpu()
                commits = [
                    mailboxes.commit(
                        "default", box, audio, caller_number="1", caller_name="", received_at=time.time(),
                        duration=0.1, call_id="bench",
                    )
                    for box, audio in batch
                ]  # fmt: skip
                await gatherResults(commits)  # durable: every NOTIFY has left when the last one fires
                await wait(settled, 60)
                wall, used = time.monotonic() - started, cpu() - started_cpu
                line = (
                    f"{shape:6} round {round_ + 1}: {args.phones} NOTIFYs answered in {wall * 1000:7.1f} ms"
                    f" = {args.phones / wall:7.0f}/s; PBX CPU {used / args.phones * 1e6:6.0f} us per NOTIFY"
                    f" ({used / wall * 100:3.0f} % of a core)"
                )
                print(line, flush=True)
                results.append(line)
                state["last"] = line

    def finish(result: Any) -> None:
        if hasattr(result, "getTraceback"):
            print(result.getTraceback(), file=sys.stderr)
            state["failed"] = True
        top.stopService().addBoth(lambda _: reactor.stop())

    from twisted.internet.defer import Deferred

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()).addBoth(finish))
    top.privilegedStartService()
    top.startService()
    print(
        f"Python {sys.version.split()[0]}: {args.phones} phones over UDP (SIPp), "
        f"{args.rounds} rounds per shape"
    )
    try:
        reactor.run()
    finally:
        if sipp is not None:
            try:
                sipp.wait(15)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if state.get("failed"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
