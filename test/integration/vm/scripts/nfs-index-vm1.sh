# Host A of nfs-volume-index.test.ts: the one that changes volumes. Each change is made through
# its plugin socket and then signalled ($SHARE/<change>); host B times how long its own answers
# take to show it, and signals <change>-seen before the next change.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-takeover-lib.sh"

nfs_mount /mnt/nfs
mkdir -p "$ROOT"
write_config 20
start_daemon
for v in g m r; do expect_ok VolumeDriver.Create "{\"Name\":\"$v\",\"Opts\":{\"size\":\"16M\"}}" >/dev/null; done
signal a-ready
wait_for b-ready 300

# change NAME METHOD JSON: makes the change, signals it at once (a builtin: no fork before host
# B's clock starts), then fails on an Err and waits for host B to have seen it.
change() {
  local out; out=$(call "$2" "$3")
  : > "$SHARE/$1"
  [ -z "$(echo "$out" | json Err)" ] || die "$2 $3: $out"
  wait_for "$1-seen" 60
}
expect_ok VolumeDriver.Create '{"Name":"c1","Opts":{"size":"16M"}}' >/dev/null
change created VolumeDriver.Create '{"Name":"c2","Opts":{"size":"16M"}}'
change grown Ballast.Grow '{"Name":"g","Size":"48M"}'
change taken VolumeDriver.Mount '{"Name":"m","ID":"c-m"}'
change released VolumeDriver.Unmount '{"Name":"m","ID":"c-m"}'
change removed VolumeDriver.Remove '{"Name":"r"}'
result "a_loops_end=$(loops) a_mounts_end=$(ballast_mounts)"
stop_daemon
exit 0
