# Host B of nfs-volume-index.test.ts: the observer. It only calls Get and List, answered from its
# volume index, which sees host A's changes only through NFS readdirs of the loop root and of its
# change markers (ROOT/.rev). For each change host A signals, it polls until its answers show it
# and prints the delay from the signal to the end of the round that showed it (RESULT
# <change>_ms=..., "never" after WAIT_MS) and how long that round took (<change>_round_ms: the
# polling's own cost, under TCG). Its replies go to $SHARE/out/b-<what> for the test to check.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-takeover-lib.sh"
WAIT_MS=15000

ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
get() { call VolumeDriver.Get "{\"Name\":\"$1\"}"; }
list() { call VolumeDriver.List '{}'; }
# The checks match the raw replies (compact JSON) in bash: a jq per round costs ~0.3 s under TCG.
# until_signal NAME: a tight poll (no fork: nap), so the delay starts when the change is done.
until_signal() {
  for _ in $(seq 6000); do [ -e "$SHARE/$1" ] && return 0; nap 0.02; done
  die "waited too long for $1"
}
# observe CHANGE CHECK: from host A's signal, runs CHECK (a function, true once the change shows)
# until it holds or WAIT_MS passed.
observe() {
  local change=$1 check=$2 t0 t1
  until_signal "$change"
  t0=$(ms)
  for (( ; ; )); do
    t1=$(ms)
    $check && break
    [ $(( $(ms) - t0 )) -gt "$WAIT_MS" ] && { result "${change}_ms=never"; signal "$change-seen"; return; }
    nap 0.05
  done
  result "${change}_ms=$(( $(ms) - t0 )) ${change}_round_ms=$(( $(ms) - t1 ))"
  signal "$change-seen"
}

nfs_mount /mnt/nfs
mkdir -p "$ROOT"
write_config 20
start_daemon
wait_for a-ready 300
# B's index may have been built before A's creates (B's daemon started first): its List shows them
# within the index's bound, as documented; wait for that, then keep what B holds before the
# changes, for the test to compare.
t0=$(ms)
until case "$(list)" in *'"Name":"g"'*'"Name":"m"'*'"Name":"r"'*) true ;; *) false ;; esac; do
  [ $(( $(ms) - t0 )) -gt "$WAIT_MS" ] && break
  nap 0.05
done
result "before_list_ms=$(( $(ms) - t0 ))"
save b-before-list "$(list)"
for v in g m r; do save "b-before-get-$v" "$(get "$v")"; done
signal b-ready

# A name this host never saw, created on A a moment ago: one Get finds it at once (absence is
# never cached). Then List, which reads only the index, must show both new volumes.
until_signal created
t0=$(ms)
save b-fresh-get-c2 "$(get c2)"
result "fresh_get_ms=$(( $(ms) - t0 ))"
created() { LAST=$(list); [[ $LAST == *'"Name":"c1"'* && $LAST == *'"Name":"c2"'* ]]; }
observe created created
save b-created-list "$LAST"

grown() { LAST=$(get g); [[ $LAST == *'"size":"48 MiB"'* ]]; }
observe grown grown
save b-grown-get-g "$LAST"

taken() { LAST=$(get m); [[ $LAST == *'"lease":{"state":"held"'* ]]; }
observe taken taken
save b-taken-get-m "$LAST"
released() { LAST=$(get m); [[ $LAST == *'"lease":{"state":"free"'* ]]; }
observe released released
save b-released-get-m "$LAST"

# Gone from both: the Get (the index drops it, and a fresh read finds nothing) and the List.
removed() { LAST=$(get r) && LAST_LIST=$(list); [[ $LAST == *'does not exist'* && $LAST_LIST != *'"Name":"r"'* ]]; }
LAST_LIST=
observe removed removed
save b-removed-get-r "$LAST"
save b-removed-list "$LAST_LIST"
stop_daemon
exit 0
