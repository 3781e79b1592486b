"""The real sipvicious tools against `twistd pbx` on loopback learn nothing and get blocked (issue 14).

Debian's `sipvicious` (`svmap`, `svwar`, `svcrack`) always exits 0, so its output is read: "found nothing",
and none of the tables it prints when it finds a device, an extension or a password. Three PBXs, started
side by side:

(a) defaults: every tool says `User-Agent: friendly-scanner`: its requests are dropped without an answer and
    its source blocked at the first one (one log line per block), while a phone elsewhere registers;
(b) the User-Agent screen off (`edge.scanner_user_agents = []`): `svwar` with REGISTER, INVITE and OPTIONS,
    with and without `--force`, finds no extension (an unknown user is answered exactly like a known one);
    `svcrack` is blocked by the brute-force guard after 5 guesses, for a user that does not exist as for
    one that does (the right password comes after them in its dictionary);
(c) the screen off and `edge.drop_unserved_addresses` on, 127.0.0.1 not a served domain: `svmap` sweeping
    the address gets no answer at all, while a phone addressing the domain registers.

svwar and svcrack cannot choose their source address (`-b` is ignored by svwar 0.3.3, absent from svcrack):
they come from the address the kernel picks for the target. Runs are bounded in time; each tool gets its
own local port. Where several tools run at once, they run as parallel subprocesses (svcrack waits 10 s
for its socket at the end whatever happens).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.sip.digest import answer_challenge
from tests.e2e.harness import PbxProcess, free_port, ipv6_loopback, write_config
from tests.e2e.test_registrar import SipPhone

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("svwar") is None, reason="Debian package sipvicious not installed"),
]

HOST = "127.0.0.1"
EXTENSIONS = "1000-1010"  # 1000-1003 exist
FOUND_EXTENSION = "| Extension"  # svwar's and svcrack's result tables
FOUND_DEVICE = "| SIP Device"  # svmap's


def start_pbx(directory: Path, extra: str, *, ipv6: bool = False, aliases: str | None = None) -> tuple:
    directory.mkdir()
    ports = write_config(directory, ipv6=ipv6, trace=False, extra=extra)
    if aliases is not None:
        text = ports["path"].read_text()
        ports["path"].write_text(text.replace('aliases = ["127.0.0.1", "::1"]', f"aliases = {aliases}"))
    (directory / "dialplans" / "default" / "main.j2").write_text("hangup 486\n")
    return PbxProcess(ports["path"]), ports


def ready(process: PbxProcess, ports: dict) -> None:
    process.wait_ready(ports["listeners"], timeout=60)
    process.wait_for(r"Location service loaded \d+ bindings")


@pytest.fixture(scope="module")
def pbxs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[PbxProcess, dict]]]:
    """The three PBXs of the module docstring, started at once."""
    base = tmp_path_factory.mktemp("scanners")
    started = {
        "screen": start_pbx(base / "a", ""),
        "guard": start_pbx(base / "b", "\n[edge]\nscanner_user_agents = []\n", ipv6=ipv6_loopback()),
        "unserved": start_pbx(
            base / "c",
            "\n[edge]\nscanner_user_agents = []\ndrop_unserved_addresses = true\n",
            aliases='["pbx.example"]',
        ),
    }
    try:
        for process, ports in started.values():
            ready(process, ports)
        yield started
    finally:
        for process, _ in started.values():
            process.stop()


def sv(tool: str, *args: str, timeout: float = 40.0) -> str:
    """Run a sipvicious tool, bounded in time; its output (it always exits 0)."""
    result = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd="/tmp"
    )
    return result.stdout + result.stderr


def in_parallel(runs: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Run several tools at once; name -> output."""
    outputs: dict[str, str] = {}

    def run(name: str, argv: tuple[str, ...]) -> None:
        outputs[name] = sv(*argv)

    threads = [threading.Thread(target=run, args=(name, argv)) for name, argv in runs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(outputs) == set(runs), f"a tool did not finish: {sorted(set(runs) - set(outputs))}"
    return outputs


def svwar(port: int, method: str, *extra: str) -> tuple[str, ...]:
    local = str(free_port())
    return ("svwar", "-P", local, "-x", HOST, "-e", EXTENSIONS, "-m", method, *extra, HOST, "-p", str(port))


def svcrack(port: int, user: str, dictionary: Path, host: str = HOST) -> tuple[str, ...]:
    six = ("-6",) if ":" in host else ()
    local = str(free_port(host))
    return ("svcrack", *six, "-P", local, "-x", host, "--maximumtime", "2", "-u", user, "-d", str(dictionary),
            host, "-p", str(port))  # fmt: skip


def svmap(port: int, source: str) -> tuple[str, ...]:
    local = str(free_port(source))
    return ("svmap", "-P", local, "-b", source, "-x", source, HOST, "-p", str(port))


def dictionary(path: Path, password: str) -> Path:
    """Eight wrong guesses, then the right one (the guard must stop the tool before)."""
    path.write_text("".join(f"guess{n}\n" for n in range(8)) + f"{password}\n")
    return path


def learnt_nothing(output: str) -> None:
    assert "found nothing" in output, output
    assert FOUND_EXTENSION not in output and FOUND_DEVICE not in output, output
    assert "pass100" not in output, output


def phone_registers(port: int, source: str, domain: str | None = None) -> None:
    phone = SipPhone((HOST, port), bind=source)
    try:
        if domain is not None:  # address the domain, not the IP (c)
            original = phone.register_bytes

            def register_bytes(user: str, authorization: str | None = None, expires: int = 600) -> bytes:
                data = original(user, authorization, expires)
                return data.replace(f"sip:{HOST}:{port}".encode(), f"sip:{domain}".encode()).replace(
                    f"@{HOST}>".encode(), f"@{domain}>".encode()
                )

            phone.register_bytes = register_bytes  # type: ignore[method-assign]
            first = phone.send(phone.register_bytes("1001"))
            assert first is not None and first.status == 401, first
            credentials = answer_challenge(
                first.challenges()[0], method="REGISTER", uri=f"sip:{domain}", username="1001",
                password="pass1001",
            )  # fmt: skip
            final = phone.send(phone.register_bytes("1001", str(credentials)))
        else:
            final = phone.register("1001", "pass1001")
        assert final is not None and final.status == 200, final
    finally:
        phone.close()


def test_scanners_are_dropped_silently_and_blocked(pbxs, tmp_path):
    """(a) Every tool's first request blocks its source; nothing is answered; a phone elsewhere registers."""
    process, ports = pbxs["screen"]
    port = ports["sip"]
    outputs = in_parallel(
        {
            "svmap": svmap(port, "127.0.0.2"),
            "svwar REGISTER": svwar(port, "REGISTER"),
            "svwar INVITE": svwar(port, "INVITE", "--force"),
            "svwar OPTIONS": svwar(port, "OPTIONS"),
            "svcrack": svcrack(port, "1000", dictionary(tmp_path / "dict.txt", "pass1000")),
        }
    )
    for name, output in outputs.items():
        learnt_nothing(output)
        if name.startswith("svwar") and "--force" not in name:
            assert "No server response" in output or "timed out" in output, (name, output)
    for source in ("127.0.0.1", "127.0.0.2"):
        blocks = process.wait_for(rf"Blocked {source} for 60 s: scanner User-Agent", timeout=5)
        assert len(blocks) == 1, blocks  # logged once per block, not per request
    assert "Failed REGISTER authentication" not in process.output  # never parsed, never challenged
    phone_registers(port, "127.0.0.9")


def test_svwar_finds_no_extension_with_any_method(pbxs):
    """(b) With the screen off, unknown and known users are answered alike: svwar finds nothing."""
    process, ports = pbxs["guard"]
    port = ports["sip"]
    runs = {
        f"{method}{' --force' if force else ''}": svwar(port, method, *(("--force",) if force else ()))
        for method in ("REGISTER", "INVITE", "OPTIONS")
        for force in (False, True)
    }
    outputs = in_parallel(runs)
    for name, output in outputs.items():
        learnt_nothing(output)
        if name in ("REGISTER", "INVITE"):
            assert "authentication request for an unknown extension" in output, (name, output)
    assert "Blocked" not in process.output.split("Edge protection", 1)[1]  # asking is not guessing


def test_svcrack_is_blocked_for_unknown_and_known_users(pbxs, tmp_path):
    """(b) Five wrong answers block the source, whether the user does not exist (svcrack, 4242) or does
    (1000, guessed by hand from 127.0.0.3: svcrack cannot choose its source)."""
    process, ports = pbxs["guard"]
    port = ports["sip"]
    answered: list[list[bool]] = []
    guessing = threading.Thread(
        target=lambda: answered.append(guess_by_hand(port, "127.0.0.3", "1000", 7)), daemon=True
    )
    guessing.start()
    output = sv(*svcrack(port, "4242", dictionary(tmp_path / "unknown.txt", "pass4242")))
    guessing.join(30)
    assert answered == [[True] * 5 + [False]], answered  # the 5th wrong answer blocks: the 6th is dropped
    learnt_nothing(output)
    process.wait_for(r"Blocked 127\.0\.0\.1 for 600 s: 5 failed authentications", timeout=5)
    failed = process.wait_for(r"Failed REGISTER authentication for 4242@default from 127\.0\.0\.1", count=5)
    assert len(failed) == 5, failed  # the sixth guess and later ones were dropped before parsing
    process.wait_for(r"Blocked 127\.0\.0\.3 for 600 s: 5 failed authentications", timeout=5)
    assert len(process.wait_for(r"Failed REGISTER authentication for 1000@default from 127\.0\.0\.3")) == 5
    assert len(process.wait_for(r"Blocked 127\.0\.0\.1 for")) == 1  # the guard's line only
    phone_registers(port, "127.0.0.9")


def guess_by_hand(port: int, source: str, user: str, guesses: int) -> list[bool]:
    """REGISTER for `user` answering each challenge with a wrong password; whether each guess was answered."""
    phone = SipPhone((HOST, port), bind=source)
    answered = []
    try:
        challenge = phone.send(phone.register_bytes(user))
        assert challenge is not None and challenge.status == 401, challenge
        for n in range(guesses):
            authorization = phone.authorization(challenge.challenges()[0], user, f"guess{n}")
            response = phone.send(phone.register_bytes(user, authorization), timeout=1.0 if n >= 5 else 5.0)
            answered.append(response is not None)
            if response is None:
                break
            challenge = response
    finally:
        phone.close()
    return answered


def test_svmap_sweeping_addresses_gets_no_answer(pbxs):
    """(c) Requests to an IP address that is not a served domain are dropped; the domain still works."""
    process, ports = pbxs["unserved"]
    port = ports["sip"]
    outputs = in_parallel({"svmap": svmap(port, "127.0.0.2"), "svwar": svwar(port, "OPTIONS", "--force")})
    for output in outputs.values():
        learnt_nothing(output)
    assert "Blocked" not in process.output.split("Edge protection", 1)[1]  # dropped, not blocked
    phone_registers(port, "127.0.0.9", domain="pbx.example")
