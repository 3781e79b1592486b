"""`twistd pbx --workers N` (issue 17 item 3): each worker's config, the supervisor's spawning, restarts with
back-off, drain on stop, the parent watch, and the `twistd pbx` options. No process is started: the spawner
is a fake and the clock `task.Clock`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure

from pbx.config import parse_config
from pbx.service.supervisor import (
    RESTART_DELAY,
    RESTART_DELAY_MAX,
    STABLE_AFTER,
    STOP_MARGIN,
    SUPERVISOR_PID,
    ParentWatch,
    WorkerSupervisor,
    build_supervisor,
    describe_exit,
    twistd_command,
    watch_parent,
)
from pbx.service.workers import (
    DISPATCHER_FILE,
    check_workers,
    dispatcher_list,
    rtp_slice,
    worker_argv,
    worker_config,
    worker_file,
)
from pbx.tap import Options

PG = "postgresql://pbx@127.0.0.1:5432/pbx"


def document(store: str = PG, **extra: object) -> dict:
    return {
        "pbx": {"data_dir": "data"},
        "sip": {
            "listen": [
                {"transport": "udp", "host": "127.0.0.1", "port": 5070},
                {"transport": "tcp", "host": "127.0.0.1", "port": 5070},
            ]
        },
        "store": {"url": store},
        "media": {"rtp_port_min": 10000, "rtp_port_max": 19999},
        "tenants": {"default": {"domain": "localhost", "extensions": {"1000": {"password": "secret"}}}},
        **extra,
    }


def config_of(tmp_path: Path, **kwargs: object):
    config = parse_config(document(**kwargs), tmp_path)  # type: ignore[arg-type]
    return dataclasses.replace(config, source=tmp_path / "pbx.toml")


# -- each worker's configuration --------------------------------------------------------------------------


def test_worker_i_listens_on_the_configured_ports_plus_i_with_its_own_rtp_slice(tmp_path: Path) -> None:
    config = config_of(tmp_path, metrics={"listen": "127.0.0.1:9464"}, admin={"listen": "127.0.0.1:8088"})
    slices = []
    for index in range(4):
        worker = worker_config(config, index, 4)
        assert [x.port for x in worker.sip.listeners] == [5070 + index, 5070 + index]
        assert worker.metrics.listen == f"127.0.0.1:{9464 + index}"
        assert worker.admin.port == 8088 + index
        assert worker.store == config.store and worker.data_dir == config.data_dir
        slices.append((worker.media.rtp_port_min, worker.media.rtp_port_max))
    assert slices == [(10000, 12499), (12500, 14999), (15000, 17499), (17500, 19999)]
    assert worker_config(config, 0, 1) is config  # --workers 1: today's PBX exactly


def test_rtp_slices_are_even_aligned_and_do_not_overlap() -> None:
    parts = [rtp_slice(10000, 10099, i, 3) for i in range(3)]
    assert parts == [(10000, 10031), (10032, 10063), (10064, 10095)]
    assert all(low % 2 == 0 and (high - low + 1) % 2 == 0 for low, high in parts)


def test_several_workers_on_sqlite_are_refused_naming_the_store_url(tmp_path: Path) -> None:
    config = config_of(tmp_path, store="")
    problem = check_workers(config, 2)
    assert problem is not None and "[store] url" in problem and "SQLite" in problem
    assert check_workers(config, 1) is None  # one process: SQLite is fine


@pytest.mark.parametrize(
    ("count", "index", "words"),
    [(0, None, "--workers must be 1 to 64"), (65, None, "--workers must be 1"), (2, 2, "--worker-index")],
)
def test_bad_counts_and_indexes_are_refused(
    tmp_path: Path, count: int, index: int | None, words: str
) -> None:
    problem = check_workers(config_of(tmp_path), count, index)
    assert problem is not None and words in problem


def test_ports_above_65535_and_too_small_rtp_ranges_are_refused(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    high = dataclasses.replace(
        config,
        sip=dataclasses.replace(
            config.sip, listeners=(dataclasses.replace(config.sip.listeners[0], port=65535),)
        ),
    )
    assert "above 65535" in (check_workers(high, 2) or "")
    small = dataclasses.replace(
        config, media=dataclasses.replace(config.media, rtp_port_min=10000, rtp_port_max=10007)
    )
    assert "fewer than 4 ports" in (check_workers(small, 3) or "")
    assert check_workers(config, 4) is None


def test_the_dispatcher_list_names_every_worker(tmp_path: Path) -> None:
    text = dispatcher_list(config_of(tmp_path), 3)
    assert text.splitlines()[1:] == ["1 sip:127.0.0.1:5070", "1 sip:127.0.0.1:5071", "1 sip:127.0.0.1:5072"]
    assert text.startswith("#")


def test_worker_command_lines_carry_their_index_and_per_worker_pid_and_log_files(tmp_path: Path) -> None:
    assert worker_file("/run/pbx/twistd.pid", 1) == "/run/pbx/twistd-worker-1.pid"
    assert worker_file("", 1) == ""
    argv = worker_argv(
        ["py", "twistd"], tmp_path / "pbx.toml", 2, 1, pidfile="twistd.pid", logfile="pbx.log", sip_trace=True
    )
    assert argv == [
        "py",
        "twistd",
        "--nodaemon",
        "--pidfile=twistd-worker-1.pid",
        "--logfile=pbx-worker-1.log",
        "pbx",
        "--config",
        str(tmp_path / "pbx.toml"),
        "--workers",
        "2",
        "--worker-index",
        "1",
        "--sip-trace",
    ]
    assert "--logfile" not in " ".join(worker_argv(["t"], tmp_path, 2, 0, logfile="-"))


def test_twistd_command_reuses_the_twistd_script_else_its_entry_point(tmp_path: Path) -> None:
    script = tmp_path / "twistd"
    script.write_text("#!/usr/bin/env python3\n")
    assert twistd_command(str(script), "/venv/python") == ["/venv/python", str(script)]
    assert twistd_command("-c", "/venv/python")[:2] == ["/venv/python", "-c"]


# -- the supervisor ----------------------------------------------------------------------------------------


class FakeProcess:
    def __init__(self, pid: int, protocol, argv: list[str], env: dict, child_fds: dict) -> None:
        self.pid = pid
        self.protocol = protocol
        self.argv = argv
        self.env = env
        self.child_fds = child_fds
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, signal: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(signal)

    def end(self, code: int | None = 0, signal: int | None = None) -> None:
        self.ended = True
        reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        self.protocol.processEnded(Failure(reason))


class FakeSpawner:
    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        assert executable == args[0]
        process = FakeProcess(
            1000 + len(self.processes), protocol, list(args), dict(env or {}), dict(childFDs or {})
        )
        self.processes.append(process)
        return process

    def of(self, index: int) -> list[FakeProcess]:
        return [p for p in self.processes if p.argv[-1] == str(index)]


def supervisor(
    count: int = 2, stop_timeout: float = 40.0
) -> tuple[WorkerSupervisor, FakeSpawner, Clock, list]:
    spawner, clock, started = FakeSpawner(), Clock(), []
    sup = WorkerSupervisor(
        count,
        lambda i: ["twistd", "pbx", "--worker-index", str(i)],
        spawner,
        clock,
        env={"A": "1"},
        stop_timeout=stop_timeout,
        on_start=lambda: started.append(True),
    )
    return sup, spawner, clock, started


@pytest.fixture
def events():
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def texts(events: list[dict]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events]


def test_start_spawns_every_worker_with_the_environment_and_inherited_output(events) -> None:
    sup, spawner, clock, started = supervisor(3)
    sup.startService()
    assert started == [True]
    assert [p.argv[-1] for p in spawner.processes] == ["0", "1", "2"]
    assert all(p.env == {"A": "1"} and p.child_fds == {0: "w", 1: 1, 2: 2} for p in spawner.processes)
    assert sup.alive == [0, 1, 2]
    assert "PBX worker 2 started (pid 1002)" in texts(events)
    assert clock.getDelayedCalls() == []


def test_a_dead_worker_is_restarted_with_a_growing_back_off_reset_once_it_ran_long(events) -> None:
    sup, spawner, clock, _ = supervisor(2)
    sup.startService()
    delays = []
    for _ in range(7):
        spawner.of(1)[-1].end(code=1)
        assert sup.alive == [0]
        (pending,) = clock.getDelayedCalls()
        delays.append(pending.getTime() - clock.seconds())
        clock.advance(delays[-1])
        assert sup.alive == [0, 1]
    assert delays == [RESTART_DELAY, 2, 4, 8, 16, RESTART_DELAY_MAX, RESTART_DELAY_MAX]
    assert any(
        "PBX worker 1 (pid 1001) exited after 0 s: exit code 1; restarting it in 1 s" in t
        for t in texts(events)
    )
    clock.advance(STABLE_AFTER)  # it stays up a while: the next death is restarted quickly again
    spawner.of(1)[-1].end(signal=9)
    assert clock.getDelayedCalls()[0].getTime() - clock.seconds() == RESTART_DELAY
    assert any("signal 9" in t for t in texts(events))
    assert len(spawner.of(0)) == 1  # the other worker was left alone
    clock.advance(RESTART_DELAY)
    assert clock.getDelayedCalls() == []


def test_stop_terms_every_worker_and_fires_once_all_have_drained(events) -> None:
    sup, spawner, clock, _ = supervisor(2)
    sup.startService()
    stopped = sup.stopService()
    fired: list[object] = []
    stopped.addCallback(fired.append)
    assert [p.signals for p in spawner.processes] == [["TERM"], ["TERM"]]
    spawner.processes[0].end()
    assert fired == []  # worker 1 is still draining its calls
    spawner.processes[1].end(code=0)
    assert fired == [None]
    assert len(spawner.processes) == 2  # no restart while stopping
    assert "PBX supervisor: every worker has stopped" in texts(events)
    assert clock.getDelayedCalls() == []


def test_a_worker_that_does_not_exit_in_time_is_killed(events) -> None:
    sup, spawner, clock, _ = supervisor(2, stop_timeout=40.0)
    sup.startService()
    fired: list[object] = []
    sup.stopService().addCallback(fired.append)
    spawner.processes[0].end()
    clock.advance(39.9)
    assert spawner.processes[1].signals == ["TERM"]
    clock.advance(0.1)
    assert spawner.processes[1].signals == ["TERM", "KILL"]
    spawner.processes[1].end(signal=9)
    assert fired == [None]
    assert any("still running 40 s after SIGTERM" in t for t in texts(events))
    assert clock.getDelayedCalls() == []


def test_stop_cancels_a_pending_restart_and_returns_at_once_when_none_runs() -> None:
    sup, spawner, clock, _ = supervisor(1)
    sup.startService()
    spawner.processes[0].end(code=3)
    assert len(clock.getDelayedCalls()) == 1
    fired: list[object] = []
    sup.stopService().addCallback(fired.append)
    assert fired == [None] and clock.getDelayedCalls() == []
    assert len(spawner.processes) == 1


def test_a_signal_to_a_worker_that_just_exited_is_not_an_error() -> None:
    sup, spawner, clock, _ = supervisor(1)
    sup.startService()
    spawner.processes[0].ended = True  # exited, its end not yet reported
    fired: list[object] = []
    sup.stopService().addCallback(fired.append)
    spawner.processes[0].protocol.processEnded(Failure(ProcessDone(0)))
    assert fired == [None] and clock.getDelayedCalls() == []


def test_describe_exit() -> None:
    assert describe_exit(Failure(ProcessDone(0))) == "exit code 0"
    assert describe_exit(Failure(ProcessTerminated(2, None))) == "exit code 2"
    assert describe_exit(Failure(ProcessTerminated(None, 15))) == "signal 15"


def test_build_supervisor_writes_the_dispatcher_list_and_the_shared_nonce_key(tmp_path: Path, events) -> None:
    config = config_of(tmp_path, calls={"drain_timeout": 20})
    spawner = FakeSpawner()

    class Reactor(Clock):
        spawnProcess = spawner.spawnProcess

    reactor = Reactor()
    sup = build_supervisor(
        config,
        reactor,
        2,
        command=["py", "twistd"],
        server_options={"pidfile": "twistd.pid", "logfile": None},
        sip_trace=False,
        environ={"PATH": "/bin"},
        pid=4242,
    )
    assert sup.stop_timeout == 20 + STOP_MARGIN
    sup.startService()
    assert (config.data_dir / DISPATCHER_FILE).read_text() == dispatcher_list(config, 2)
    assert (config.data_dir / "nonce.key").stat().st_size == 32
    first = spawner.processes[0]
    assert first.env == {"PATH": "/bin", SUPERVISOR_PID: "4242", "PYTHONUNBUFFERED": "1"}
    assert first.argv[:4] == ["py", "twistd", "--nodaemon", "--pidfile=twistd-worker-0.pid"]
    assert first.argv[-4:] == ["--workers", "2", "--worker-index", "0"]
    assert any("1 sip:127.0.0.1:5070; 1 sip:127.0.0.1:5071" in t for t in texts(events))
    for process in spawner.processes:
        process.end()
    sup.stopService()
    assert reactor.getDelayedCalls() == []


# -- the worker's watch on its supervisor ------------------------------------------------------------------


def test_a_worker_whose_supervisor_is_gone_stops() -> None:
    clock, parent, stopped = Clock(), [77], []
    watch = ParentWatch(clock, 77, lambda: parent[0], lambda: stopped.append(True))
    watch.start()
    clock.advance(5)
    assert stopped == []
    parent[0] = 1  # re-parented to init: the supervisor died
    clock.advance(1)
    assert stopped == [True]
    assert clock.getDelayedCalls() == []


def test_watch_parent_only_under_a_supervisor() -> None:
    class Reactor(Clock):
        def stop(self) -> None:
            self.stopped = True

    reactor = Reactor()
    assert watch_parent(reactor, {}, lambda: 1) is None
    watch = watch_parent(reactor, {SUPERVISOR_PID: "50"}, lambda: 51)
    assert watch is not None
    reactor.advance(1)
    assert reactor.stopped and reactor.getDelayedCalls() == []


# -- twistd pbx options ------------------------------------------------------------------------------------


def write(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "pbx.toml"
    path.write_text(
        '[pbx]\ndata_dir = "data"\n\n[[sip.listen]]\ntransport = "udp"\nhost = "127.0.0.1"\nport = 5070\n\n'
        + (f'[store]\nurl = "{store}"\n\n' if store else "")
        + '[tenants.default]\ndomain = "localhost"\n'
    )
    return path


def test_options_default_to_one_worker_and_refuse_sqlite_with_several(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    options = Options()
    options.parseOptions(["-c", str(path)])
    assert options["workers"] == 1 and options["worker-index"] is None
    with pytest.raises(usage.UsageError, match=r"\[store\] url"):
        Options().parseOptions(["-c", str(path), "--workers", "2"])
    ok = Options()
    ok.parseOptions(["-c", str(write(tmp_path, PG)), "--workers", "2", "--worker-index", "1"])
    assert (ok["workers"], ok["worker-index"]) == (2, 1)


def test_with_a_shared_store_a_node_keeps_alive_only_the_phones_it_registered(tmp_path: Path) -> None:
    from pbx.service.registrar import owned_bindings
    from pbx.store import Binding

    def bound(local: str) -> Binding:
        return Binding(
            tenant="default", aor="1000", contact="sip:1000@192.0.2.1", expires_at=60.0, q=1.0, call_id="c",
            cseq=1, received="udp:192.0.2.1:5060", local=local, registered_at=0.0,
        )  # fmt: skip

    worker1 = worker_config(config_of(tmp_path), 1, 2)
    owned = owned_bindings(worker1)
    assert owned is not None
    assert owned(bound("udp:127.0.0.1:5071")) and owned(bound("tcp:127.0.0.1:5071")) and owned(bound(""))
    assert not owned(bound("udp:127.0.0.1:5070"))  # worker 0's
    assert owned_bindings(config_of(tmp_path, store="")) is None  # one process on SQLite: every binding
