# Helpers for the host's commands, loaded by /etc/zc/serve before each one.

# Debian's static busybox runs its own applets before PATH: the real ip and
# ss (for -d and --xdp) by their paths.
ip() { /usr/sbin/ip "$@"; }
ss() { /usr/bin/ss "$@"; }

# bg NAME CMD...: runs CMD in the background, its output in /tmp/NAME.log;
# its pid goes to /tmp/NAME.pid and, when it ends, its exit status to
# /tmp/NAME.rc.
bg() {
    local n=$1
    shift
    rm -f "/tmp/$n.pid" "/tmp/$n.rc" "/tmp/$n.log"
    (
        "$@" > "/tmp/$n.log" 2>&1 &
        echo $! > "/tmp/$n.pid"
        wait $!
        echo $? > "/tmp/$n.rc"
    ) > /dev/null 2>&1 3>&- &
    local end=$(($(date +%s) + 30))
    while [ ! -s "/tmp/$n.pid" ] && [ "$(date +%s)" -lt $end ]; do
        sleep 0.05
    done
}

# ended NAME: true once NAME has exited.
ended() { [ -s "/tmp/$1.rc" ]; }

# waitend NAME SECS: waits up to SECS for NAME to exit and prints its exit
# status; fails if it is still running.
waitend() {
    local end=$(($(date +%s) + $2))
    while ! ended "$1"; do
        if [ "$(date +%s)" -ge $end ]; then
            echo "$1 still running after $2 s"
            return 1
        fi
        sleep 0.1
    done
    cat "/tmp/$1.rc"
}

# stop NAME SIGNAL SECS: sends SIGNAL to NAME, then as waitend.
stop() {
    if [ ! -s "/tmp/$1.pid" ]; then
        echo "$1 was not started"
        return 1
    fi
    kill "-$2" "$(cat "/tmp/$1.pid")"
    waitend "$1" "$3"
}

# up NAME SECS CHECK...: waits up to SECS until CHECK succeeds while NAME
# runs; fails with NAME's output if it exits or the time runs out.
up() {
    local n=$1
    local end=$(($(date +%s) + $2))
    shift 2
    while ended "$n" || ! "$@" > /dev/null 2>&1; do
        if ended "$n"; then
            echo "$n exited with status $(cat "/tmp/$n.rc"):"
            cat "/tmp/$n.log"
            return 1
        fi
        if [ "$(date +%s)" -ge $end ]; then
            echo "$n not ready in time:"
            cat "/tmp/$n.log"
            return 1
        fi
        sleep 0.2
    done
}

# reap: kills what an earlier (failed) check left running.
reap() {
    local n
    for n in engine echo; do
        if [ -s "/tmp/$n.pid" ] && ! ended "$n"; then
            echo "(killing the $n left running)"
            kill -KILL "$(cat "/tmp/$n.pid")"
            waitend "$n" 30 > /dev/null
        fi
    done
}

# engine NAME ARGS...: starts `xdpip run -i xa -i xb ARGS` as NAME, alone,
# and waits until it answers on its control socket.
engine() {
    local n=$1
    shift
    reap
    bg "$n" xdpip run -i xa -i xb "$@"
    up "$n" 90 xdpip stats --json
}

# linkup IFACE SECS: waits up to SECS for IFACE to have its link (igb
# drops it for a few seconds on a reset).
linkup() {
    local end=$(($(date +%s) + $2))
    sleep 1
    until [ "$(cat "/sys/class/net/$1/operstate")" = up ]; do
        if [ "$(date +%s)" -ge $end ]; then
            echo "$1 is $(cat "/sys/class/net/$1/operstate") after $2 s"
            return 1
        fi
        sleep 0.2
    done
}

# inlog NAME TEXT: true when NAME's output holds TEXT.
inlog() { grep -q -- "$2" "/tmp/$1.log"; }

# netstat NAME: a TcpExt counter of /proc/net/netstat.
netstat() {
    awk -v k="$1" '$1 == "TcpExt:" {
        if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 }
        else { for (i = 2; i <= NF; i++) if (n[i] == k) print $i }
    }' /proc/net/netstat
}

# xdplink IFACE: the XDP lines of `ip -d link show IFACE`.
xdplink() { ip -d link show "$1" | grep -E 'xdp' || true; }
