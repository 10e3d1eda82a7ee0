#!/usr/bin/env python3
"""The measuring half of scripts/bench (which prepares the cluster and the dataset).

Runs each command under GNU time, alternating the commands round by round so drift on the
machine hits all of them alike, and reports medians and ratios (a ratio of two commands measured
in the same rounds is the median of their per-round ratios, see `vs`). Inputs come from the
environment scripts/bench sets: BENCH_DIR, BENCH_SCALE, BENCH_ROUNDS, BENCH_GROWTH,
BENCH_PUBLISH, BENCH_PHASE, BENCH_S3_* and PGKEEP_TEST_AWS_ENDPOINT (the emulator), BENCH_PGBR
(pgBackRest's directory, empty to skip it), PGKEEP_BIN, PGKEEP_PG_BIN,
PGKEEP_PG_HOST/PORT/USER/PASSWORD.

`BENCH_PHASE=backup` (`scripts/bench --only backup`) runs only the backup rows and their scaling
with cores, and writes BENCH_DIR/BACKUP.md.

Two phases, because pgBackRest copies the whole cluster: `main` runs while only the default
dataset is loaded and saves its results; scripts/bench then loads the growth datasets and runs
`growth`, which times the floor and pgkeep at each scale and writes the report. `report`
(`scripts/bench --report`) writes the report again from the last run's saved results, with no
cluster: for a change to the report, not to what is measured.
"""
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ["BENCH_DIR"])
SCALE = int(os.environ["BENCH_SCALE"])
ROUNDS = int(os.environ["BENCH_ROUNDS"])
GROWTH = [int(s) for s in os.environ.get("BENCH_GROWTH", "").split(",") if s]
PUBLISH = os.environ.get("BENCH_PUBLISH") == "yes"
# Unset in the `report` phase, which runs nothing.
PGBIN = os.environ.get("PGKEEP_PG_BIN", "")
PGKEEP = os.environ.get("PGKEEP_BIN", "")
PHASE = os.environ.get("BENCH_PHASE", "main")
PGBR = os.environ.get("BENCH_PGBR", "")

# Connection for every client through libpq's environment: the password never reaches argv.
ENV = dict(os.environ)
ENV.update(
    PGHOST=os.environ.get("PGKEEP_PG_HOST", ""),
    PGPORT=os.environ.get("PGKEEP_PG_PORT", ""),
    PGUSER=os.environ.get("PGKEEP_PG_USER", ""),
    PGPASSWORD=os.environ.get("PGKEEP_PG_PASSWORD", ""),
    PATH=f"{PGBIN}:{os.environ['PATH']}",
)


def pg_url(db):
    return "postgresql://{}@{}:{}/{}".format(ENV["PGUSER"], ENV["PGHOST"], ENV["PGPORT"], db)


def pgkeep_env(db, repo):
    env = dict(ENV)
    env.update(
        PGKEEP_DATABASE_URL=pg_url(db),
        PGKEEP_REPO=str(repo),
        PGKEEP_KEY_FILE=str(BENCH / "bench.key"),
    )
    return env


def server_cpu():
    """CPU seconds the benchmark cluster has used so far: the postmaster, the backends that ended
    (which the postmaster reaped, so in its children's times) and those still running. GNU time
    sees only the command and its children, not the server's work for it."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = (BENCH / "pg" / "data" / "postmaster.pid").read_text().split()[0]

    def fields(p):
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    # A backend that has exited but is not yet reaped (a zombie) shows no CPU of its own and is
    # not yet in the postmaster's children's times: wait (up to 5 s) until none is left.
    deadline = time.monotonic() + 5
    while True:
        own = fields(pid)
        total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
        zombies = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    f = fields(entry)
                except OSError:
                    continue
                if f[1] == pid:
                    total += int(f[11]) + int(f[12])
                    zombies += f[0] == "Z"
        if not zombies or time.monotonic() > deadline:
            return total / tick
        time.sleep(0.01)


def pin_server(cpus):
    """Pins the benchmark cluster (the postmaster and its processes; the backends it forks later
    inherit it) to `cpus`, a taskset list such as "0" or "0,1"."""
    pid = (BENCH / "pg" / "data" / "postmaster.pid").read_text().split()[0]
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == pid:
                        pids.append(entry)
            except OSError:
                continue
    for p in pids:
        # A process that ended meanwhile is no error.
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def settle():
    """Writes out what the previous command left dirty (the server's buffers, then the kernel's
    page cache) before the next one is timed: with fsync off, a restore's 1.4 GB or a 1 GB
    archive file would otherwise be written back to disk during whichever command runs next
    (measured: a bare pg_restore took 20.2 s right after `pgkeep cat` wrote its archive, 13.0 s
    and 13.6 s in the other rounds)."""
    subprocess.run([f"{PGBIN}/psql", "-XAtqc", "CHECKPOINT", "-d", "postgres"], env=ENV, check=True)
    subprocess.run(["sync"], check=True)


_PROBE_TEXT = None
PROBE_BYTES = 32 << 20


def probe():
    """Seconds a fixed job takes on one core (zstd level 3, pgkeep's codec and level, of 32 MiB
    of deterministic words; the fastest of three), run before every timed command. This shared
    host's speed for compression drifts (the same backup took 6.0 and 9.6 CPU-seconds on one
    day) while pg_dump's barely moves, so these times say how far the run's ratios can be
    trusted. zstd, not zlib: on a contended afternoon zlib of the same text slowed 17% while
    pgkeep's CPU rose 48%; zstd's tables share the caches the way pgkeep's compressor does."""
    global _PROBE_TEXT
    if _PROBE_TEXT is None:
        rng = random.Random(0)
        words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))))
                 for _ in range(5000)]
        text = bytearray()
        while len(text) < PROBE_BYTES:
            text += (" ".join(rng.choice(words) for _ in range(64)) + f" {rng.randint(0, 10**6)}\n").encode()
        _PROBE_TEXT = bytes(text[:PROBE_BYTES])
    compressor = zstandard.ZstdCompressor(level=3)
    best = None
    for _ in range(3):  # the fastest of three: a blip is not the host's speed
        start = time.perf_counter()
        compressor.compress(_PROBE_TEXT)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best


# A run whose host check drifted more than this is not published: on this shared host a
# drift of 49% took the same restore from 0.70x to 0.88x a bare pg_restore within an hour.
MAX_DRIFT = 0.30


def probe_times(groups):
    """The host check of every command of `groups` (lists of cases)."""
    return [r["probe"] for cases in groups for c in cases for r in c.runs if r.get("probe")]


def drift(groups):
    """How far the probe's 90th percentile sits above its 10th over every command of `groups`
    (one slow command is not a slow host); None without probes."""
    times = probe_times(groups)
    if not times:
        return None
    deciles = statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times), max(times)]
    return deciles[-1] / deciles[0] - 1


def host_note(groups):
    """The probe's spread over every command of `groups` (lists of cases), for the reader to
    judge the run by."""
    times = probe_times(groups)
    if not times:
        return ""
    note = (f"Host check: a fixed job (zstd level 3 of 32 MiB of words, one core, fastest of 3) before each command took"
            f" {min(times):.2f}–{max(times):.2f} s (median {statistics.median(times):.2f} s); its 90th percentile is"
            f" {drift(groups):.0%} above its 10th (the more, the more the host's speed drifted during the run;"
            f" pgkeep's rows, whose CPU is mostly zstd, drift with it, pg_dump's hardly; above {MAX_DRIFT:.0%}"
            f" the run is not published).")
    return note


def all_cpus():
    return f"0-{os.cpu_count() - 1}"


class Case:
    """One benchmarked command: a shell pipeline (pipelines are what is being compared). With
    `pin`, the command runs under `taskset -c PIN` and the server is pinned to the same CPUs."""

    def __init__(self, name, script, output=None, env=None, prepare=None, size=None, pin=None):
        self.name, self.output = name, output
        self.plain_script = script
        self.script = f"taskset -c {pin} bash -o pipefail -c {shlex.quote(script)}" if pin else script
        self.env, self.prepare, self.size, self.pin = env or ENV, prepare, size, pin
        self.runs = []
        self.batch = None  # the cases measured together, round by round (see `vs`)

    def run(self):
        if self.prepare:
            self.prepare()
        settle()
        host = probe()
        pin_server(self.pin or all_cpus())
        timing = BENCH / "time.txt"
        server_before = server_cpu()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(timing), "bash", "-o", "pipefail", "-c", self.script],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{self.name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        wall, user, sys_, rss = timing.read_text().split()[-4:]
        size = self.size(proc.stdout) if self.size else (Path(self.output).stat().st_size if self.output else None)
        server = server_cpu() - server_before
        self.runs.append(dict(wall=float(wall), cpu=float(user) + float(sys_), rss_mib=int(rss) / 1024, size=size,
                              server_cpu=server, probe=host))
        return self.runs[-1]

    def median(self, key):
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else None


def all_cpu(run):
    """The CPU seconds of a run, the server's included."""
    return run["cpu"] + run["server_cpu"]


def vs(case, base, of=lambda run: run["wall"]):
    """`of` a run of `case` (its wall time unless told) as a multiple of `base`'s wall time.
    Measured in the same rounds, the median of the per-round ratios: a round runs its commands
    back to back, so a host that slows down between rounds (this shared one does, by up to 60%)
    slows both sides of each ratio, where a ratio of medians can take one side's fast round and
    the other's slow one. Otherwise (a pinned row against an unpinned one), the ratio of the
    medians."""
    if case.batch is not None and case.batch == base.batch and len(case.runs) == len(base.runs):
        return statistics.median(of(a) / b["wall"] for a, b in zip(case.runs, base.runs))
    return statistics.median(of(r) for r in case.runs) / base.median("wall")


def bounds(case, base):
    """The least wall time all of `case`'s CPU allows on 2, 4 and 8 cores, in seconds and × the
    wall time of `base`, as table cells."""
    total = statistics.median(all_cpu(r) for r in case.runs)
    return " | ".join(f"{total / n:.2f} s ({vs(case, base, lambda r, n=n: all_cpu(r) / n):.2f}×)"
                      for n in (2, 4, 8))


def s3_env(db, repo):
    env = pgkeep_env(db, repo)
    del env["PGKEEP_KEY_FILE"]
    env.update(
        PGKEEP_REPO=f"{os.environ['BENCH_S3_REPO']}/{db}",
        PGKEEP_CATALOG=os.environ["BENCH_S3_CATALOG"],
        PGKEEP_KEY=os.environ["BENCH_S3_KEY"],
        PGKEEP_AWS_ENDPOINT=os.environ["PGKEEP_TEST_AWS_ENDPOINT"],
    )
    return env


def as_cluster_owner(command):
    """pgBackRest must run as the user owning the data directory (postgres, when we are root)."""
    return f"runuser -u postgres -- {command}" if os.geteuid() == 0 else command


def pgbackrest(command):
    return as_cluster_owner(f"pgbackrest --config={PGBR}/pgbackrest.conf --stanza=bench {command}")


def fresh_pgbackrest_repo():
    subprocess.run(["rm", "-rf", f"{PGBR}/repo"], check=True)
    subprocess.run(["bash", "-c", pgbackrest("stanza-create")], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)


def pgbackrest_size(_stdout):
    out = subprocess.run(["du", "-sb", f"{PGBR}/repo/backup"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def fresh_repo(path):
    def prepare():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    return prepare


def stored_size(stdout):
    record = json.loads(stdout)
    return record["size_bytes"] + sum(p["size_bytes"] for p in record.get("parts", []))


def cases_for(db):
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    repo = BENCH / f"repo-{db}"
    floor, single, parallel, parallel_fast = backup_cases(db)
    return [
        floor,
        Case("pg_dump -Fc -f FILE", f"pg_dump -Fc -d {db} -f {out}/fc.dump", output=f"{out}/fc.dump"),
        Case("pg_dump -Fc | gzip > FILE", f"pg_dump -Fc -d {db} | gzip > {out}/fc.dump.gz", output=f"{out}/fc.dump.gz"),
        Case("pg_dump -Fp | gzip -9 > FILE", f"pg_dump -Fp -d {db} | gzip -9 > {out}/plain.sql.gz", output=f"{out}/plain.sql.gz"),
        single,
        Case("pgkeep backup (gzip, local)", f"{PGKEEP} backup --json --compression gzip", env=pgkeep_env(db, repo), prepare=fresh_repo(repo), size=stored_size),
        Case("pgkeep backup (zstd, S3 emulator)", f"{PGKEEP} backup --json", env=s3_env(db, repo), size=stored_size),
        parallel,
        parallel_fast,
    ] + ([Case("pgBackRest full backup (zst, 2 processes)", pgbackrest("backup --type=full"),
               prepare=fresh_pgbackrest_repo, size=pgbackrest_size)] if PGBR and PHASE == "main" else [])


COUNT_SQL = """SELECT n.nspname, c.relname,
       (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I',
                                                   n.nspname, c.relname), false, true, '')))[1]
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"""


def verify_cases(db):
    """`pgkeep verify` and `pgkeep restore` of one backup against a bare pg_restore of the same
    archive (what `pgkeep cat` prints) into an empty database, counting every table, then
    dropping it; and both of a parallel backup (`backup --jobs 2`) of the same database."""
    repo = BENCH / f"repo-verify-{db}"
    env = pgkeep_env(db, repo)
    subprocess.run(["rm", "-rf", str(repo)], check=True)

    def take(*args):
        return json.loads(subprocess.run([PGKEEP, "backup", "--json", *args], env=env, capture_output=True,
                                         text=True, check=True).stdout)["id"]
    single, parallel = take(), take("--jobs", "2")
    archive = BENCH / "out" / "verify.dump"
    archive.parent.mkdir(exist_ok=True)
    with open(archive, "wb") as f:
        subprocess.run([PGKEEP, "cat", single], env=env, stdout=f, check=True)
    (BENCH / "count.sql").write_text(COUNT_SQL)
    count = f"psql -XAtq -v ON_ERROR_STOP=1 -d bench_restore -f {BENCH / 'count.sql'} > /dev/null && dropdb bench_restore"
    bare = ("createdb bench_restore && "
            f"pg_restore --exit-on-error --no-owner --no-privileges -d bench_restore {archive} && " + count)
    restore = f"{PGKEEP} restore --json --no-owner --target-db bench_restore"
    return [
        Case("pg_restore + count tables (bare)", bare),
        Case("pgkeep verify", f"{PGKEEP} verify --json {single} > /dev/null", env=env),
        Case("pgkeep restore + count", f"{restore} {single} > /dev/null && " + count, env=env),
        Case("pgkeep restore --jobs 2 (backup --jobs 2) + count", f"{restore} --jobs 2 {parallel} > /dev/null && " + count, env=env),
        Case("pgkeep verify --jobs 2 (backup --jobs 2)", f"{PGKEEP} verify --json --jobs 2 {parallel} > /dev/null", env=env),
    ]


def restore_scaling_cases(verify):
    """The bare pg_restore and both parallel restore rows pinned to 1 core and to 2 (taskset, the
    server included): what a second core buys each of them."""
    return pinned_copies([verify[0], by_name(verify, "pgkeep restore --jobs 2"), by_name(verify, "pgkeep verify --jobs 2")])


def pinned_copies(cases):
    """Each case again pinned to 1 core, then each pinned to 2 ("1 core: NAME", "2 core: NAME");
    the tables pair the two halves in this order."""
    return [Case(f"{len(cpus.split(','))} core: {c.name}", c.plain_script, output=c.output, env=c.env,
                 prepare=c.prepare, size=c.size, pin=cpus)
            for cpus in ("0", "0,1") for c in cases]


def restore_scaling_table(verify, pinned):
    """Wall time on 1 core and on 2 for each pinned restore row, and the 2-core wall against the
    unpinned bare pg_restore (the target's measure)."""
    bare = verify[0].median("wall")
    rows = ["| command | wall on 1 core (s) | wall on 2 cores (s) | 2 cores ÷ 1 | CPU, all, on 2 cores (s) | 2 cores vs bare |",
            "|---|---:|---:|---:|---:|---:|"]
    half = len(pinned) // 2
    for one, two in zip(pinned[:half], pinned[half:]):
        total = statistics.median(all_cpu(r) for r in two.runs)
        rows.append("| `{}` | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f}× |".format(
            two.name.split(": ", 1)[1], one.median("wall"), two.median("wall"),
            vs(two, one), total, vs(two, verify[0])))
    return "\n".join(rows)


RESTORE_SCALING_NOTE = (
    "The same restores pinned to 1 core and then to 2 (`taskset`, the server included), medians"
    " of the same rounds. A bare pg_restore runs one COPY or index build at a time, so a second"
    " core gives it only what pg_restore and the server's background work take off that backend;"
    " `2 cores ÷ 1` is how much of the second core each command turns into wall time.")


def scaling_cases(db):
    """The parallel cases and their single-stream references pinned to 1 core and to 2 (taskset,
    the server included): how the wall time scales with cores, for the targets 2 cores cannot
    meet."""
    repo = BENCH / f"repo-scaling-{db}"
    env = pgkeep_env(db, repo)
    return pinned_copies([
        Case("pg_dump -Fc -Z0 > /dev/null (floor)", f"pg_dump -Fc -Z0 -d {db} > /dev/null"),
        Case("pgkeep backup", f"{PGKEEP} backup --json", env=env, prepare=fresh_repo(repo), size=stored_size),
        Case("pgkeep backup --jobs 2", f"{PGKEEP} backup --json --jobs 2", env=env, prepare=fresh_repo(repo), size=stored_size),
    ])


def backup_cases(db):
    """The floor, a single-stream backup and `--jobs 2`, also at zstd level 1 (what the CPU a
    level saves buys): rows of `cases_for`, and all that `--only backup` runs (no S3, so no
    emulator is needed)."""
    repo = BENCH / f"repo-{db}"
    env = pgkeep_env(db, repo)
    return [
        Case("pg_dump -Fc -Z0 > /dev/null (floor)", f"pg_dump -Fc -Z0 -d {db} > /dev/null"),
        Case("pgkeep backup (zstd, local)", f"{PGKEEP} backup --json", env=env, prepare=fresh_repo(repo), size=stored_size),
        Case("pgkeep backup --jobs 2 (zstd, local)", f"{PGKEEP} backup --json --jobs 2", env=env, prepare=fresh_repo(repo), size=stored_size),
        Case("pgkeep backup --jobs 2 --compression zstd:1 (local)", f"{PGKEEP} backup --json --jobs 2 --compression zstd:1",
             env=env, prepare=fresh_repo(repo), size=stored_size),
    ]


def backup_cpu_table(cases, scaling):
    """Wall and CPU of the backup rows, and the least wall time all their CPU (the command's,
    its pg_dump children's and the server's) allows on N cores, against the floor's wall time
    (`cases[0]`)."""
    rows = ["| command | wall (s) | CPU (s) | server CPU (s) | CPU, all (s) | wall vs floor | bound on 2 cores | on 4 | on 8 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases + scaling:
        total = statistics.median(all_cpu(r) for r in c.runs)
        rows.append("| `{}` | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f}× | {} |".format(
            c.name, c.median("wall"), c.median("cpu"), c.median("server_cpu"), total, vs(c, cases[0]),
            bounds(c, cases[0])))
    return "\n".join(rows)


BACKUP_CPU_NOTE = (
    "CPU is the command and its children (pg_dump); server CPU is the cluster's during the command. The"
    " pinned rows run the command and the server on 1 core, then on 2 (`taskset`). A bound is the CPU,"
    " all of it, divided by N cores: the least wall time N cores allow (× the unpinned floor's wall:"
    " round by round for the unpinned rows, medians for the pinned ones).")


def jobs_work_note(cases, scaling):
    """What the `backup --jobs 2` target (0.9× the floor) asks of 2 cores, in CPU seconds: its
    work measured on one core (where none of it goes to handing data between cores, so usually
    the least) halved is about the least it can take on two."""
    floor, one = cases[0], by_name(scaling, "1 core: pgkeep backup --jobs 2")
    if one is None:
        return ""
    work = statistics.median(all_cpu(r) for r in one.runs)
    floor_wall = floor.median("wall")
    return (f"`backup --jobs 2` pinned to one core is {work:.2f} CPU-seconds of work, the server's included"
            f" (on one core none of it goes to handing data between cores, so it is usually the least). Two"
            f" cores can at best halve it:"
            f" {work / 2:.2f} s, {work / 2 / floor_wall:.2f}× the floor's {floor_wall:.2f} s. 0.9× the floor"
            f" needs the work at {2 * 0.9 * floor_wall:.2f} CPU-seconds or less"
            + (", so on this run's 2 cores the target cannot be met." if work / 2 > 0.9 * floor_wall else ".")
            + " The floor is one server backend and gains nothing from a second core (its pinned rows).")


def backup_report(cases, scaling):
    return "\n".join([
        "# Backup rows", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; medians of {ROUNDS} rounds, commands alternated;"
        f" load average at the end {os.getloadavg()[0]:.2f} (other work on the machine).", "",
        host_note([cases, scaling]), "",
        BACKUP_CPU_NOTE, "", backup_cpu_table(cases, scaling), "", jobs_work_note(cases, scaling), ""])


def measure(cases, rounds):
    batch = object()
    for case in cases:
        case.batch = batch
    for r in range(rounds):
        order = cases if r % 2 == 0 else list(reversed(cases))
        for case in order:
            res = case.run()
            print(f"  round {r + 1}: {case.name:<40} {res['wall']:7.2f} s  cpu {res['cpu']:6.2f} s  rss {res['rss_mib']:6.1f} MiB"
                  f"  host check {res['probe']:.3f} s", flush=True)


def db_size(db):
    out = subprocess.run([f"{PGBIN}/psql", "-XAtc", f"SELECT pg_database_size('{db}')", "-d", db],
                         env=ENV, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    pg = subprocess.run([f"{PGBIN}/postgres", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPU ({model}), {mem / 1048576:.0f} GiB RAM, {pg}, {platform.system()} {platform.release()}"


def table(cases, baseline):
    rows = ["| command | wall (s) | CPU (s) | peak RSS (MiB) | output (MB) | wall vs `pg_dump -Fc -f` | size vs `pg_dump -Fc -f` |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        size = c.median("size")
        rows.append("| {} | {:.2f} | {:.2f} | {:.0f} | {} | {:.2f}× | {} |".format(
            "`" + c.name.replace("|", "\\|") + "`", c.median("wall"), c.median("cpu"), c.median("rss_mib"),
            f"{size / 1e6:.1f}" if size else "–",
            vs(c, baseline),
            f"{size / baseline.median('size'):.2f}×" if size else "–"))
    return "\n".join(rows)


def by_name(cases, prefix):
    return next((c for c in cases if c.name.startswith(prefix)), None)


def targets(cases, verify, growth):
    floor, fc = cases[0], cases[1]
    gz, plain, pk = cases[2], cases[3], cases[4]
    s3, pgbr = by_name(cases, "pgkeep backup (zstd, S3"), by_name(cases, "pgBackRest")
    pj = by_name(cases, "pgkeep backup --jobs 2")
    bare, pv = verify[0], verify[1]
    rj, vj = by_name(verify, "pgkeep restore --jobs 2"), by_name(verify, "pgkeep verify --jobs 2")
    checks = [
        ("pgkeep (zstd) wall ≤ 1.1× floor", vs(pk, floor), 1.1),
        ("pgkeep (zstd) wall ≤ 0.5× pg_dump -Fc -f", vs(pk, fc), 0.5),
        ("pgkeep (zstd) size ≤ 1.0× pg_dump -Fc -f", pk.median("size") / fc.median("size"), 1.0),
        ("pgkeep ≥ 2× faster than pg_dump -Fc | gzip", vs(gz, pk), 2.0),
        ("pgkeep ≥ 5× faster than pg_dump -Fp | gzip -9", vs(plain, pk), 5.0),
        ("pgkeep peak RSS ≤ 64 MiB", pk.median("rss_mib"), 64),
        ("pgkeep verify ≤ 1.2× bare pg_restore + count", vs(pv, bare), 1.2),
        ("pgkeep to the S3 emulator ≤ 1.2× local repository", vs(s3, pk), 1.2),
        ("pgkeep to the S3 emulator peak RSS ≤ 64 MiB", s3.median("rss_mib"), 64),
        ("pgkeep backup --jobs 2 wall ≤ 0.9× floor", vs(pj, floor), 0.9),
        ("pgkeep backup --jobs 2 peak RSS ≤ 64 MiB", pj.median("rss_mib"), 64),
        ("pgkeep restore --jobs 2 ≤ 0.75× bare pg_restore + count", vs(rj, bare), 0.75),
        ("pgkeep verify --jobs 2 ≤ 0.75× bare pg_restore + count", vs(vj, bare), 0.75),
    ]
    if pgbr:
        checks.append(("pgkeep ≤ 1.0× pgBackRest full backup", vs(pk, pgbr), 1.0))
    if len(growth) >= 2:
        rss = [g[2][1].median("rss_mib") for g in growth]
        checks.append(("pgkeep peak RSS, largest ÷ smallest scale ≤ 1.1", rss[-1] / rss[0], 1.1))
    lines = ["| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for name, value, goal in checks:
        higher_is_better = "faster" in name
        met = value >= goal if higher_is_better else value <= goal
        name = name.replace("|", "\\|")
        lines.append(f"| {name} | {value:.2f} | {goal} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def chart(cases, path):
    try:
        import matplotlib
    except ImportError:  # scripts/bench installs it; a bare run of this file may lack it
        print(f"matplotlib is missing: {path} not drawn", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [c.name for c in cases]
    walls = [c.median("wall") for c in cases]
    colors = ["#999999" if not n.startswith("pgkeep") else "#2a7ab0" for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    bars = ax.barh(names[::-1], walls[::-1], color=colors[::-1])
    ax.bar_label(bars, fmt="%.1f s", padding=3)
    ax.set_xlim(0, max(walls) * 1.15)  # room for the longest bar's label
    ax.set_xlabel(f"median wall time, seconds (pgbench scale {SCALE} + docs; lower is better)")
    ax.set_title("pgkeep backup vs pg_dump pipelines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


NOTES = """## Reading these numbers

- The floor is pg_dump's own extraction (the server formats every row for COPY); on 2 CPUs
  pgkeep's compression, encryption and hashing share the cores with it, so its margin over the
  floor is the CPU left over. Run the benchmark on an otherwise idle machine: with background
  compiles (even at nice 19) the same build measured 1.46× the floor.
- `pg_dump -Fc` compresses with zlib on its single thread, which is why it is so much slower
  than the floor here; pgkeep's zstd runs on worker threads.
- pgBackRest copies the cluster's files (every database, indexes, the WAL of the backup), not a
  logical dump, so its output holds more; it is the bar for time, not for size.
- The S3 case's extra time and memory are the emulator (moto, Python, on the same 2 CPUs) and
  the upload's buffers (8 MiB parts, 2 in flight, one waiting, one filling: 32 MiB); a real S3
  endpoint takes the upload off this machine.
- The parallel cases (`--jobs 2`) add a server backend and a compression stream per part: on
  2 CPUs shared with the server they can only gain what the single stream leaves idle; the
  scaling table below shows wall time against CPU seconds on 1 and 2 cores.
"""


def verify_table(cases):
    rows = ["| command | wall (s) | CPU (s) | server CPU (s) | peak RSS (MiB) | wall vs bare |",
            "|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        server = c.median("server_cpu")
        rows.append("| `{}` | {:.2f} | {:.2f} | {} | {:.0f} | {:.2f}× |".format(
            c.name, c.median("wall"), c.median("cpu"), f"{server:.2f}" if server is not None else "–",
            c.median("rss_mib"), vs(c, cases[0])))
    return "\n".join(rows)


def cores_table(cases):
    """The least wall time the CPU work of each command allows on N cores (all of its CPU, the
    server's included, spread perfectly): a bound, not a measurement."""
    rows = ["| command | CPU, all (s) | bound on 2 cores | on 4 | on 8 |", "|---|---:|---:|---:|---:|"]
    for c in cases:
        if c.median("server_cpu") is None:
            continue
        rows.append("| `{}` | {:.2f} | {} |".format(
            c.name, statistics.median(all_cpu(r) for r in c.runs), bounds(c, cases[0])))
    return "\n".join(rows)


def save(path, cases):
    path.write_text(json.dumps([dict(name=c.name, runs=c.runs) for c in cases]))


def load(path):
    """Cases saved by `save`; those of one file were measured together (one batch)."""
    cases = []
    for item in json.loads(path.read_text()):
        case = Case(item["name"], "")
        case.runs = item["runs"]
        case.batch = path.name
        cases.append(case)
    return cases


def main():
    global SCALE, ROUNDS, PUBLISH
    if PHASE == "backup":
        print(f"dataset: {db_size('bench') / 1e9:.2f} GB at scale {SCALE}; {ROUNDS} rounds, backup rows only")
        cases = backup_cases("bench")
        try:
            measure(cases, ROUNDS)
            print("scaling with cores")
            scaling = scaling_cases("bench")
            measure(scaling, ROUNDS)
        finally:
            pin_server(all_cpus())
        text = backup_report(cases, scaling)
        (BENCH / "BACKUP.md").write_text(text)
        print(text)
        return
    if PHASE == "restore":
        print(f"dataset: {db_size('bench') / 1e9:.2f} GB at scale {SCALE}; {ROUNDS} rounds, restore rows only")
        verify = verify_cases("bench")
        measure(verify, ROUNDS)
        pinned = restore_scaling_cases(verify)
        try:
            measure(pinned, ROUNDS)
        finally:
            pin_server(all_cpus())
        text = "\n\n".join([verify_table(verify), cores_table(verify), RESTORE_SCALING_NOTE,
                             restore_scaling_table(verify, pinned)]) + "\n"
        text = host_note([verify, pinned]) + "\n\n" + text
        (BENCH / "RESTORE.md").write_text(text)
        print(text)
        return
    if PHASE == "main":
        (BENCH / "meta.json").write_text(json.dumps(dict(
            size=db_size("bench"), machine=machine(), measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            scale=SCALE, rounds=ROUNDS, publish=PUBLISH)))
        print(f"dataset: {db_size('bench') / 1e9:.2f} GB at scale {SCALE}; {ROUNDS} rounds")
        cases = cases_for("bench")
        measure(cases, ROUNDS)
        save(BENCH / "main.json", cases)
        print("verification")
        verify = verify_cases("bench")
        measure(verify, ROUNDS)
        save(BENCH / "verify.json", verify)
        print("scaling with cores")
        scaling = scaling_cases("bench")
        pinned = restore_scaling_cases(verify)
        try:
            measure(scaling, ROUNDS)
            measure(pinned, ROUNDS)
        finally:
            pin_server(all_cpus())
        save(BENCH / "scaling.json", scaling)
        save(BENCH / "restore-scaling.json", pinned)
        return
    meta = json.loads((BENCH / "meta.json").read_text())
    size = meta["size"]
    if PHASE == "report":  # the saved run's settings, not this command line's
        SCALE, ROUNDS, PUBLISH = meta["scale"], meta["rounds"], meta["publish"]
    cases, verify = load(BENCH / "main.json"), load(BENCH / "verify.json")
    scaling = load(BENCH / "scaling.json")
    pinned = load(BENCH / "restore-scaling.json")
    growth = []
    for s in sorted(GROWTH):
        db = "bench" if s == SCALE else f"bench_s{s}"
        picked = [c for c in cases_for(db) if c.name.startswith(("pg_dump -Fc -Z0", "pgkeep backup (zstd, local"))]
        print(f"growth: scale {s}")
        measure(picked, max(1, ROUNDS // 2))
        growth.append((s, db_size(db), picked))
    pgbr_note = ("" if by_name(cases, "pgBackRest") else
                 " pgBackRest was not installed, so its case is missing.")

    report = [
        "# Benchmarks", "",
        f"Measured {meta['measured']} on {meta['machine']}; warm cache, one throwaway cluster.",
        f"Dataset: pgbench scale {SCALE} plus a `docs` table of {30000 * SCALE:,} rows of text and JSON "
        f"(scripts/sql/bench_docs.sql), {size / 1e9:.2f} GB on disk. Medians of {ROUNDS} rounds, commands alternated"
        f" (each round runs them all, in reverse order every other round); a × between two commands of one"
        f" table measured in the same rounds is the median of their per-round ratios, so the host's drift between"
        f" rounds cancels;"
        f" before each command a CHECKPOINT and `sync` (not timed) write out what the previous one left dirty."
        f" Every pgkeep backup is compressed, encrypted (AES-256-GCM) and hashed (SHA-256); the S3 case"
        f" uploads to moto (the AWS emulator, on the same 2 CPUs) with a DynamoDB catalog and a KMS key there.{pgbr_note}",
        "", host_note([cases, verify, scaling, pinned]), "", "Reproduce: `scripts/bench" + (f" --growth {','.join(map(str, GROWTH))}" if GROWTH else "")
        + "` (options: `--scale N`, `--rounds N`, `--growth 10,50,100`, `--no-pgbackrest`).", "",
        table(cases, cases[1]), "", "![chart](benchmarks.png)", "",
        "## Verification", "",
        "`pgkeep verify` (fetch, check, decrypt, restore into a scratch database, count every table, compare the"
        " objects, drop it) against a bare `pg_restore` of the same archive (`pgkeep cat` output, on local disk)"
        " into an empty database followed by a count of every table.", "",
        verify_table(verify), "",
        "The parallel rows: a backup taken with `--jobs 2` (a schema object and two data parts from one"
        " snapshot), restored with `restore --jobs 2` (pre-data, both data parts at once from their streams,"
        " each part's indexes and keys as soon as it is in, the rest of post-data with 2 workers) and"
        " verified with `verify --jobs 2`. The server CPU column is the"
        " benchmark cluster's own CPU time during the command (COPY, index builds, counting), which the"
        " CPU column does not see.", "",
        "The least wall time that CPU work allows on N cores (the command's and the server's CPU"
        " seconds divided by N; × is against the bare pg_restore's wall time): where the bound on 2"
        " cores is above 0.75×, the parallel restore target cannot be met on this machine.", "",
        cores_table(verify), "",
        RESTORE_SCALING_NOTE, "",
        restore_scaling_table(verify, pinned), "",
        "## Targets", "", targets(cases, verify, growth), "", NOTES,
        "## Scaling with cores", "",
        "The backup rows again with the CPU seconds behind them, then pinned to 1 core and to both"
        f" (medians of {ROUNDS} rounds). " + BACKUP_CPU_NOTE, "",
        backup_cpu_table([c for c in (by_name(cases, b.name) for b in backup_cases("bench")) if c], scaling), "",
        jobs_work_note(cases, scaling), "",
    ]
    if growth:
        report += ["## Growth with size", "", "| scale | database (GB) | floor wall (s) | pgkeep wall (s) | pgkeep peak RSS (MiB) |", "|---:|---:|---:|---:|---:|"]
        for s, b, (floor, pk) in growth:
            report.append(f"| {s} | {b / 1e9:.2f} | {floor.median('wall'):.2f} | {pk.median('wall'):.2f} | {pk.median('rss_mib'):.0f} |")
        report.append("")
    text = "\n".join(report)
    (BENCH / "BENCHMARKS.md").write_text(text)
    chart(cases, BENCH / "benchmarks.png")
    drifted = drift([cases, verify, scaling, pinned])
    if PUBLISH and drifted is not None and drifted > MAX_DRIFT:
        print(f"not published: the host check drifted {drifted:.0%} during the run (more than {MAX_DRIFT:.0%}),"
              f" so its ratios say more about the host than about pgkeep; the report is in {BENCH}")
    elif PUBLISH:
        (ROOT / "docs" / "BENCHMARKS.md").write_text(text)
        chart(cases, ROOT / "docs" / "benchmarks.png")
        print("wrote docs/BENCHMARKS.md and docs/benchmarks.png")
    print(text)


if __name__ == "__main__":
    main()
