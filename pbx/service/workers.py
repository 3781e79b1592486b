"""`twistd -n pbx --workers N`: what each of N PBX processes on one machine gets (docs/scaling.md).

The supervisor (`pbx.service.supervisor`) starts N workers, each the same `twistd -n pbx` command with
`--worker-index I` (0 to N-1). Worker I reads the same configuration and changes only what must differ
between processes on one machine (`worker_config`):

- every `[[sip.listen]]` port + I (worker 0 keeps the configured ports);
- `[metrics] listen` and `[admin] listen` port + I, when set;
- the `[media]` RTP range cut into N equal, even-aligned slices, slice I for worker I.

Everything else is shared: `pbx.data_dir` (voicemail audio, the nonce key, recordings: any worker plays a
message another recorded), and the store, which must be PostgreSQL when N > 1 (`check_workers`): the embedded
SQLite file cannot tell the other processes of a registration. The supervisor writes the list of workers for
Kamailio's `dispatcher` (`dispatcher_list`) to `pbx.data_dir/dispatcher.list`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pbx.config import Config

MAX_WORKERS = 64
"""The most workers one supervisor runs."""
DISPATCHER_FILE = "dispatcher.list"
"""The file in `pbx.data_dir` the supervisor writes the workers' addresses to, for Kamailio's dispatcher."""


def check_workers(config: Config, count: int, index: int | None = None) -> str | None:
    """Why `count` workers (and this worker `index`) cannot run with `config`, or None when they can."""
    if not 1 <= count <= MAX_WORKERS:
        return f"--workers must be 1 to {MAX_WORKERS}, not {count}"
    if index is not None and not 0 <= index < count:
        return f"--worker-index must be 0 to {count - 1} with --workers {count}, not {index}"
    if count == 1:
        return None
    if not config.store.postgresql:
        return (
            f"--workers {count} needs a store the processes share: set [store] url = "
            '"postgresql://..." (the embedded SQLite in pbx.data_dir cannot tell the other processes of a '
            "registration or a voicemail message; docs/scaling.md)"
        )
    for listener in config.sip.listeners:
        if listener.port == 0:
            return "--workers needs fixed ports in [[sip.listen]] (worker I listens on port + I), not port 0"
        if listener.port + count - 1 > 65535:
            return f"--workers {count}: [[sip.listen]] port {listener.port} + {count - 1} is above 65535"
    ports = (config.media.rtp_port_max - config.media.rtp_port_min + 1) // count
    if ports < 4:
        return (
            f"--workers {count}: the RTP range [media] rtp_port_min..rtp_port_max "
            f"({config.media.rtp_port_min}-{config.media.rtp_port_max}) gives each worker fewer than 4 ports"
        )
    return None


def rtp_slice(low: int, high: int, index: int, count: int) -> tuple[int, int]:
    """Worker `index`'s part of the RTP range low..high: equal, even-aligned, not overlapping."""
    size = ((high - low + 1) // count) & ~1
    first = low + index * size
    return first, first + size - 1


def _port_plus(listen: str, step: int) -> str:
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + step}"


def worker_config(config: Config, index: int, count: int) -> Config:
    """The configuration worker `index` of `count` runs with (the module docstring says what changes)."""
    if count == 1:
        return config
    sip = dataclasses.replace(
        config.sip,
        listeners=tuple(dataclasses.replace(x, port=x.port + index) for x in config.sip.listeners),
    )
    low, high = rtp_slice(config.media.rtp_port_min, config.media.rtp_port_max, index, count)
    changes: dict[str, object] = {
        "sip": sip,
        "media": dataclasses.replace(config.media, rtp_port_min=low, rtp_port_max=high),
    }
    if config.metrics.listen:
        changes["metrics"] = dataclasses.replace(
            config.metrics, listen=_port_plus(config.metrics.listen, index)
        )
    if config.admin.enabled:
        changes["admin"] = dataclasses.replace(config.admin, port=config.admin.port + index)
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def dispatcher_list(config: Config, count: int, setid: int = 1) -> str:
    """Kamailio `dispatcher.list` lines for the workers: one per worker, its first UDP listener (else its
    first listener, with `;transport=`); a wildcard address is given as the loopback (Kamailio on the same
    machine)."""
    listeners = config.sip.listeners
    listener = next((x for x in listeners if x.transport == "udp"), listeners[0])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.host, listener.host)
    if listener.advertise is not None:
        host = listener.advertise
    host = f"[{host}]" if ":" in host else host
    params = "" if listener.transport == "udp" else f";transport={listener.transport}"
    lines = [
        f"# {count} PBX worker(s) of `twistd pbx --workers {count}`: setid destination (docs/scaling.md)"
    ]
    lines += [f"{setid} sip:{host}:{listener.port + i}{params}" for i in range(count)]
    return "\n".join(lines) + "\n"


def worker_file(path: str, index: int) -> str:
    """A per-worker file name from the supervisor's (`twistd.pid` -> `twistd-worker-1.pid`); "" stays ""."""
    if not path:
        return ""
    p = Path(path)
    return str(p.with_name(f"{p.stem}-worker-{index}{p.suffix}"))


def worker_argv(
    command: list[str],
    config_path: Path,
    count: int,
    index: int,
    *,
    pidfile: str = "",
    logfile: str = "",
    sip_trace: bool = False,
) -> list[str]:
    """The command line of worker `index`: `command` (how this twistd was started), then twistd's options
    (`-n`, a per-worker pid file and log file, from the supervisor's), then `pbx` with the same config."""
    argv = [*command, "--nodaemon", f"--pidfile={worker_file(pidfile, index)}"]
    if logfile and logfile != "-":
        argv.append(f"--logfile={worker_file(logfile, index)}")
    argv += ["pbx", "--config", str(config_path), "--workers", str(count), "--worker-index", str(index)]
    if sip_trace:
        argv.append("--sip-trace")
    return argv
