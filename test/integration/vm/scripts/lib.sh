# Shared by the VM scenarios: run ballast inside the VM and call its plugin socket.
# Sourced with BALLAST_SRC (the checkout, seen over 9p), BALLAST_CLI (its CLI bundled into one file:
# node starts it 2-3 times as fast as dist/) and BALLAST_RUN (a writable dir) set.
# Every line the test asserts on starts with "RESULT ": key=value.

mkdir -p "$BALLAST_RUN"
result() { echo "RESULT $*" >&2; } # stderr: stays out of $(...) captures
# die also leaves its message in $BALLAST_VM_LOGS/failed: the VM prints it again after the logs,
# as the last lines a truncated console shows.
die() { echo "FAILED: $*" >&2; [ -z "${BALLAST_VM_LOGS:-}" ] || echo "FAILED: $*" >> "$BALLAST_VM_LOGS/failed"; exit 1; }
# save KEY TEXT: a text the test reads whole (an error message), as $SHARE/out/KEY (runScenario's shareDir).
save() { mkdir -p "$SHARE/out" && printf '%s\n' "$2" > "$SHARE/out/$1"; }
# nap SECONDS: sleeps without forking (a read that times out on a FIFO nobody writes). A polling
# loop of `sleep 0.1` forks ten processes a second, CPU the one-CPU TCG VM needs for the work.
[ -p /tmp/nap.fifo ] || mkfifo /tmp/nap.fifo
exec 9<>/tmp/nap.fifo
nap() { read -r -t "$1" -u 9 || true; }
ballast() { node "$BALLAST_CLI" --config "$BALLAST_RUN/config.yml" "$@"; }

# call METHOD JSON -> the reply body on stdout
call() { curl -sS --max-time 150 --unix-socket "$BALLAST_RUN/ballast.sock" -X POST -d "$2" "http://plugin/$1"; }
# json FIELD: one top-level field of the JSON on stdin, "" when absent (or null or false, as
# jq's `// ""`). A scenario parses every reply, and under emulation jq takes ~0.3 s a run (node
# seconds): a flat reply without escapes (no brace, bracket or backslash inside), which is nearly
# every reply, is read by bash itself; any other by jq.
JSON_FLAT='^[[:space:]]*[{][^][{}\\]*[}][[:space:]]*$'
json() {
  local in; IFS= read -r -d '' in || true
  if [[ $in =~ $JSON_FLAT ]]; then
    if [[ $in =~ \"$1\":\"([^\"]*)\" ]] || [[ $in =~ \"$1\":([0-9.eE+-]+|true) ]]; then printf '%s' "${BASH_REMATCH[1]}"; fi
    return 0
  fi
  printf '%s' "$in" | jq -jr --arg f "$1" '.[$f] // "" | tostring'
}
# expect_ok METHOD JSON: fails the scenario on an Err
expect_ok() { local out; out=$(call "$1" "$2"); local err; err=$(echo "$out" | json Err); [ -z "$err" ] || die "$1 $2: $err"; echo "$out"; }

# attacher_start SCRIPT: runs an attacher driver (fc-attach.mjs, nvme-attach.mjs: see
# attach-coproc.mjs) as this scenario's coprocess, one node for the whole scenario. `ac COMMAND
# ARGS` sends it one command and sets AC_<key> for each key=value line of the answer (AC_ok,
# AC_ms, AC_error, AC_device, ...), emptying the previous answer's first (under set -u, read a key
# an answer may lack as ${AC_key:-}).
attacher_start() { coproc AC_PROC { exec node "$1" 2>>"$BALLAST_VM_LOGS/$(basename "$1" .mjs)-stderr.log"; }; }
ac() {
  local line k
  for k in "${!AC_@}"; do [[ $k == AC_PROC* ]] || printf -v "$k" '%s' ''; done
  AC_ok=0 AC_error="no answer from the attacher driver within 300 s"
  echo "$*" >&"${AC_PROC[1]}" || die "the attacher driver is gone (see its -stderr.log)"
  while IFS= read -r -t 300 -u "${AC_PROC[0]}" line && [ "$line" != . ]; do
    k=${line%%=*}
    [[ $k =~ ^[a-z0-9_]+$ ]] && printf -v "AC_$k" '%s' "${line#*=}"
  done
  [ "$AC_ok" = 1 ] && AC_error=
}
attacher_stop() { exec {AC_PROC[1]}>&-; wait "$AC_PROC_PID" 2>/dev/null; }

start_tgtd() { # local array (hyper-converged): tgtd in this VM on 127.0.0.1:3260 and 127.0.0.2:3260
  tgtd -f >"$BALLAST_VM_LOGS/tgtd.log" 2>&1 &
  TGTD_PID=$!
  for _ in $(seq 100); do tgtadm --lld iscsi --mode target --op show >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "tgtd did not answer"
}

# base_config HOST_ID: the config lines every scenario shares (paths under $BALLAST_RUN).
# A scenario writes { base_config ID; cat <<YAML ... YAML; } > "$BALLAST_RUN/config.yml".
base_config() {
  cat <<YAML
host: {id: $1}
socket: $BALLAST_RUN/ballast.sock
state_dir: $BALLAST_RUN/state
mount_root: $BALLAST_RUN/mounts
docker: {socket: $BALLAST_RUN/no-docker.sock, restart_wait_seconds: 1}
YAML
}

start_ballast() { # with $BALLAST_RUN/config.yml written
  local t0; t0=$(date +%s.%N)
  # node itself in the background, not the ballast function: $! would be the function's subshell,
  # and `kill $BALLAST_PID` then left the daemon running (a "restart" ran two daemons at once).
  node "$BALLAST_CLI" --config "$BALLAST_RUN/config.yml" serve >"$BALLAST_VM_LOGS/ballast.log" 2>&1 &
  BALLAST_PID=$!
  for _ in $(seq 600); do [ -S "$BALLAST_RUN/ballast.sock" ] && break; nap 0.1; done
  [ -S "$BALLAST_RUN/ballast.sock" ] || die "ballast did not start"
  result "ballast_start_s=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")"
}

# timed NAME CMD...: runs CMD, prints RESULT NAME_ms=<elapsed>
timed() { local name=$1; shift; local t0; t0=$(date +%s%N); "$@"; local rc=$?; result "${name}_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"; return $rc; }

# dm_kname DEV: the kernel name (dm-N) of a device node, whether udev made /dev/mapper/X a
# symlink or (slow udev) ballast made it a node of its own with dmsetup mknodes.
dm_kname() { lsblk -ndo KNAME "$1"; }
sessions() { iscsiadm -m session 2>/dev/null | wc -l; }
scsi_disks() { ls /sys/block | grep -c '^sd' || true; }
dm_maps() { ls /sys/block | grep -c '^dm-' || true; }

# fault_agent: random-faults.mjs's agent on $BALLAST_RUN/config.yml, until the coordinator says exit
# (the last step of the *-random-faults scenarios).
fault_agent() {
  node "$BALLAST_SRC/test/integration/vm/scripts/random-faults.mjs" agent 2>>"$BALLAST_VM_LOGS/agent.log" || { tail -n 30 "$BALLAST_VM_LOGS/agent.log"; die "the agent failed"; }
}
