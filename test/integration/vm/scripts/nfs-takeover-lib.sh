# Shared by nfs-takeover-vm1.sh and nfs-takeover-vm2.sh: two VMs (two hosts, two kernels) run
# ballast with its loop root on one NFS export (a private ganesha on the host). The host test
# drives the steps through files in $SHARE and reads what the VMs leave there:
#   $SHARE/<step>          signals (touched by a VM or by the host test)
#   $SHARE/out/<key>       longer texts (error messages, logs) the host test reads whole
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-lib.sh"

mkdir -p "$SHARE/out"
# Loop is a module in this kernel, and nothing here creates the static /dev/loop-control node a
# regular host has (kmod static-nodes), which would load it on first open.
modprobe loop || die "cannot load the loop module"
now() { cut -d' ' -f1 /proc/uptime; }     # this VM's monotonic seconds
since() { awk "BEGIN { printf \"%.1f\", $(now) - $1 }"; }
save() { printf '%s\n' "$2" > "$SHARE/out/$1"; } # save KEY TEXT
# jget PATH: a dotted path into the JSON on stdin ("" when absent or not JSON). jq, not node: a
# node process costs seconds of the VM's one emulated CPU.
jget() {
  jq -jr --arg p "$1" 'try getpath($p | split(".")) catch null | if . == null then "" elif type == "object" or type == "array" then tojson else tostring end' 2>/dev/null || true
}

ROOT=/mnt/nfs/loop
# write_config MOUNT_WAIT: lease 12 s, renewed every 1 s, fence after 6 s; backends.loop.fence is left
# at its default (auto: nfs-lock on NFSv4.1+).
write_config() {
  { base_config "$BALLAST_VM_NAME"; cat <<YAML
log: {level: debug, file: $BALLAST_VM_LOGS/ballast.log}
lease: {seconds: 12, renew_every: 1, fence_after: 6, mount_wait: $1}
backends: {loop: {root: $ROOT, shared: true}}
profiles: {default: {backend: loop}}
YAML
  } > "$BALLAST_RUN/config.yml"
}

# start_daemon: node itself in the background (BALLAST_PID is node's PID, so kill -9 / SIGSTOP
# hit the daemon, not a subshell); its log is appended to, across restarts.
start_daemon() {
  local t0; t0=$(now)
  rm -f "$BALLAST_RUN/ballast.sock" # a killed daemon leaves its socket file behind
  echo "=== ballast serve at $(now)" >> "$BALLAST_VM_LOGS/ballast.log"
  node "$BALLAST_CLI" --config "$BALLAST_RUN/config.yml" serve >> "$BALLAST_VM_LOGS/ballast.log" 2>&1 &
  BALLAST_PID=$!
  for _ in $(seq 600); do
    [ -S "$BALLAST_RUN/ballast.sock" ] && break
    kill -0 "$BALLAST_PID" 2>/dev/null || { tail -n 20 "$BALLAST_VM_LOGS/ballast.log" >&2; die "ballast exited at start"; }
    nap 0.1
  done
  [ -S "$BALLAST_RUN/ballast.sock" ] || die "ballast did not start"
  echo "ballast (PID $BALLAST_PID) started in $(since "$t0") s" >&2
}

# wait_watchdog COUNT_BEFORE: waits (bounded) until one more fence watchdog logged that it runs
# (it shares the daemon's log file); prints how long it took. The daemon starts it at a Mount.
watchdogs_started() { grep -c 'fence watchdog running' "$BALLAST_VM_LOGS/ballast.log" || true; }
wait_watchdog() {
  local t0; t0=$(now)
  for _ in $(seq 600); do [ "$(watchdogs_started)" -gt "$1" ] && { since "$t0"; return 0; }; sleep 0.2; done
  die "no fence watchdog started within 120 s"
}

# stop_daemon: SIGTERM, bounded, then SIGKILL (by PID).
stop_daemon() {
  kill -TERM "$BALLAST_PID" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$BALLAST_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$BALLAST_PID" 2>/dev/null
  wait "$BALLAST_PID" 2>/dev/null
}

# line_writer MOUNTPOINT TAG STATE MAX_ERRORS: appends "TAG line N" to MOUNTPOINT/log, each line
# fsynced before the next. STATE.acked (this VM's own disk) holds the last acknowledged N; each
# failure is logged to STATE.err with this VM's uptime. Stops after MAX_ERRORS failures or when
# STATE.stop exists.
line_writer() {
  local mp=$1 tag=$2 st=$3 max=$4 i=0 errors=0 out
  echo 0 > "$st.acked"
  : > "$st.err"
  while [ ! -e "$st.stop" ]; do
    i=$((i + 1))
    if out=$({ echo "$tag line $i" >> "$mp/log" && sync "$mp/log"; } 2>&1); then
      echo "$i" > "$st.acked.tmp" && mv "$st.acked.tmp" "$st.acked"
    else
      echo "$(now) line $i: $out" >> "$st.err"
      errors=$((errors + 1))
      [ "$errors" -ge "$max" ] && break
      sleep 0.5
    fi
  done
}

# file_writer MOUNTPOINT STATE MAX_ERRORS: 1 MiB files, never synced (the page cache of a host
# about to be cut off), keeping the last four; failures to STATE.err as above.
file_writer() {
  local mp=$1 st=$2 max=$3 j=0 errors=0 out
  : > "$st.err"
  echo 0 > "$st.count"
  while [ ! -e "$st.stop" ]; do
    j=$((j + 1))
    if out=$({ head -c 1048576 /dev/urandom > "$mp/buf-$j"; } 2>&1); then
      echo "$j" > "$st.count"
      rm -f "$mp/buf-$((j - 4))" 2>/dev/null
    else
      echo "$(now) file $j: $out" >> "$st.err"
      errors=$((errors + 1))
      [ "$errors" -ge "$max" ] && break
    fi
    sleep 0.3
  done
}

# lines_ok FILE TAG N: "yes" when the first N "TAG line K" lines of FILE are K = 1..N in order.
lines_ok() {
  grep -a "^$2 line " "$1" 2>/dev/null | head -n "$3" | awk -v n="$3" '{ if ($3 != NR) bad = 1 } END { print (NR == n && !bad) ? "yes" : "no" }'
}
tag_lines() { grep -ac "^$2 line " "$1" 2>/dev/null || true; } # tag_lines FILE TAG

# What this VM has attached and mounted (ballast's loop devices and mounts; nothing else here makes any).
loops() { losetup -a 2>/dev/null | wc -l; }
ballast_mounts() { grep -c " $BALLAST_RUN/mounts" /proc/mounts || true; }
# The NFS client's own view of the image locks it holds (flock = an NFSv4 lock on NFS).
flocks() { grep -c 'FLOCK' /proc/locks || true; }

get_volume() { call VolumeDriver.Get "{\"Name\":\"$1\"}"; } # get_volume NAME -> the reply
