# Host B of nfs-volume-index.test.ts: the observer. It only calls Get and List, answered from its
# volume index, which sees host A's changes only through NFS readdirs of the loop root and of its
# change markers (ROOT/.rev). For each change host A signals, it polls until its answers show it
# and prints the delay from the signal (RESULT <change>_ms=..., or "never" after WAIT_MS); its
# answers before and after each change go to $SHARE/out/b-<what> for the test to check.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-takeover-lib.sh"
WAIT_MS=15000

ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
get() { call VolumeDriver.Get "{\"Name\":\"$1\"}"; }
names() { call VolumeDriver.List '{}' | jq -c '[.Volumes[].Name] | sort'; }
field() { jq -r "$1 // \"\""; } # field JQ_PATH: of the JSON on stdin
# until_signal NAME: a tight poll (no fork: nap), so the delay starts when the change is done.
until_signal() {
  for _ in $(seq 6000); do [ -e "$SHARE/$1" ] && return 0; nap 0.02; done
  die "waited too long for $1"
}
# observe CHANGE CHECK: from host A's signal, runs CHECK (a function, true once the change shows)
# until it holds or WAIT_MS passed.
observe() {
  local change=$1 check=$2 t0 dt
  until_signal "$change"
  t0=$(ms)
  until $check; do
    dt=$(( $(ms) - t0 ))
    [ "$dt" -gt "$WAIT_MS" ] && { result "${change}_ms=never"; signal "$change-seen"; return; }
    nap 0.05
  done
  result "${change}_ms=$(( $(ms) - t0 ))"
  signal "$change-seen"
}

nfs_mount /mnt/nfs
mkdir -p "$ROOT"
write_config 20
start_daemon
wait_for a-ready 300
# The index is built and in use; what B holds before the changes, for the test to compare.
save b-before-list "$(names)"
for v in g m r; do save "b-before-get-$v" "$(get "$v")"; done
signal b-ready

# A name this host never saw, created on A a moment ago: one Get finds it at once (absence is
# never cached). Then List, which reads only the index, must show both new volumes.
until_signal created
t0=$(ms)
save b-fresh-get-c2 "$(get c2)"
result "fresh_get_ms=$(( $(ms) - t0 ))"
created() { LIST=$(names); save b-after-list-created "$LIST"; [[ $LIST == *'"c1"'* && $LIST == *'"c2"'* ]]; }
observe created created

grown() { local g; g=$(get g); save b-after-get-g "$g"; [ "$(field .Volume.Status.size <<<"$g")" = '48 MiB' ]; }
observe grown grown

taken() { local m; m=$(get m); save b-taken-get-m "$m"; [ "$(field .Volume.Status.lease.state <<<"$m")" = held ]; }
observe taken taken
released() { local m; m=$(get m); save b-released-get-m "$m"; [ "$(field .Volume.Status.lease.state <<<"$m")" = free ]; }
observe released released

removed() {
  local r l; r=$(get r); l=$(names)
  save b-removed-get-r "$r"; save b-after-list-removed "$l"
  echo "DIAG $(ms) get=$(field .Err <<<"$r" | head -c 40) list=$l ls=$(ls -a "$ROOT" | tr '\n' ' ') rev=$(ls "$ROOT/.rev" | tr '\n' ' ')" >> "$SHARE/out/diag"
  [[ $(field .Err <<<"$r") == *'does not exist'* && $l != *'"r"'* ]]
}
observe removed removed
stop_daemon
exit 0
