"""Profile kapfhir's gunicorn workers with py-spy while wrk (or the ingest client) drives one request kind.

    .venv/bin/python bench/profile_service.py [--seconds 8] [--kinds fhir_read,obs_search,episode_read,write,ingest]

Writes bench/profiles/<kind>.txt: the top functions by own time and by inclusive time (project code and all),
from py-spy's collapsed stacks of every worker. Needs py-spy (pip install py-spy) and root or ptrace rights.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run_all as ra
from tests.support import harness
from tests.support.seed import seed_episodes, session_bodies

OUT = Path(__file__).resolve().parent / "profiles"


def summarize(collapsed: list[Path], top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue  # a line py-spy was still writing when its duration ended
            n = int(count)
            frames = stack.split(";")
            if any("wait (threading.py" in f or "select (selectors.py" in f or "accept" in f for f in frames[-2:]):
                continue  # idle gthread pool threads
            total += n
            own[frames[-1]] += n
            for f in set(frames):
                inclusive[f] += n
    lines = [f"busy samples: {total}", "", "own time:"]
    lines += [f"  {100 * n / max(1, total):5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive (project frames):"]
    project = [
        (f, n) for f, n in inclusive.most_common() if "/work/main/service" in f or "/mappings/" in f or "service/" in f
    ]
    lines += [f"  {100 * n / max(1, total):5.1f}%  {f}" for f, n in project[:top]]
    lines += ["", "inclusive (libraries):"]
    libs = [(f, n) for f, n in inclusive.most_common() if "site-packages" in f]
    lines += [f"  {100 * n / max(1, total):5.1f}%  {f}" for f, n in libs[:top]]
    return "\n".join(lines)


def spy(pids: list[int], seconds: int, tmp: Path) -> tuple[list[subprocess.Popen], list[Path]]:
    procs, outs = [], []
    for pid in pids:
        out = tmp / f"{pid}.txt"
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--rate",
                    "200",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        outs.append(out)
    return procs, outs


KINDS = ("fhir_read", "obs_search", "episode_read", "write", "ingest")


def profile(kinds: list[str], seconds: int) -> dict[str, str]:
    """kind -> the summary of its profile (also written to bench/profiles/<kind>.txt)."""
    OUT.mkdir(exist_ok=True)
    summaries: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kapfhir-prof-") as tmpdir:
        tmp = Path(tmpdir)
        service = harness.start_service(tmp, f"sqlite:///{tmp}/k.db", extra_env=ra.RATE_ENV)
        try:
            token = harness.mint_token(service)
            http = harness.Http(service.base_url, token)
            ids = harness.replay_fixture(http, harness.FIXTURES / "a-trd-iv-ketamine.json")
            episodes = seed_episodes(http, 8)
            auth = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
            plain = ra.write_script(tmp / "plain.lua", "")
            urls = ra.read_targets(service.base_url, http, ids, auth)
            template = ra.export_template(service, token) if "ingest" in kinds else ""
            for kind in kinds:
                pids = sorted(harness.worker_rss_kb(service))
                (tmp / kind).mkdir()
                procs, outs = spy(pids, seconds, tmp / kind)
                if kind in urls:
                    ra.wrk(urls[kind], plain, seconds, 16, headers=auth)
                elif kind == "write":
                    script = ra.write_script(tmp / "w.lua", ra.writes_lua(token, session_bodies(episodes, 3000, 0)))
                    ra.wrk(service.base_url, script, seconds, 16)
                elif kind == "ingest":
                    headers = {**ra.FHIR_JSON, "Authorization": f"Bearer {token}"}

                    def drive(headers: dict[str, str] = headers) -> None:
                        for _ in range(6):
                            ra.ingest_round(f"{service.base_url}/fhir", headers, template, 2, 2)

                    t = threading.Thread(target=drive)
                    t.start()
                    t.join(timeout=seconds + 60)
                for p in procs:
                    p.wait(timeout=seconds + 60)
                text = summarize([o for o in outs if o.exists()])
                (OUT / f"{kind}.txt").write_text(text + "\n")
                summaries[kind] = text
        finally:
            service.stop()
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    for kind, text in profile(args.kinds.split(","), args.seconds).items():
        print(f"== {kind}\n" + "\n".join(text.splitlines()[:40]))


if __name__ == "__main__":
    main()
