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

change() { # NAME: signals that a change is done, then waits for host B to have seen it
  signal "$1"
  wait_for "$1-seen" 60
}
expect_ok VolumeDriver.Create '{"Name":"c1","Opts":{"size":"16M"}}' >/dev/null
expect_ok VolumeDriver.Create '{"Name":"c2","Opts":{"size":"16M"}}' >/dev/null
change created
expect_ok Ballast.Grow '{"Name":"g","Size":"48M"}' >/dev/null
change grown
expect_ok VolumeDriver.Mount '{"Name":"m","ID":"c-m"}' >/dev/null
change taken
expect_ok VolumeDriver.Unmount '{"Name":"m","ID":"c-m"}' >/dev/null
change released
expect_ok VolumeDriver.Remove '{"Name":"r"}' >/dev/null
change removed
result "a_loops_end=$(loops) a_mounts_end=$(ballast_mounts)"
stop_daemon
exit 0
