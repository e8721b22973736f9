# Host 2: takes the moved volume (data intact), then takes over the volume frozen host 1 held.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/two-hosts-lib.sh"
start_two_hosts_ballast

wait_for vm1-moved
mp=$(timed vm2_move_mount expect_ok VolumeDriver.Mount '{"Name":"moved","ID":"d1"}' | json Mountpoint) || die "mount moved"
result "moved_intact=$([ "$(sha256sum < "$mp/data" | cut -d' ' -f1)" = "$(cat "$SHARE/moved.sha")" ] && echo yes || echo no)"
expect_ok VolumeDriver.Unmount '{"Name":"moved","ID":"d1"}' >/dev/null

wait_for vm1-frozen 300
# Refused at first (vm1's lease is fresh), it waits inside Mount until the lease runs out.
mp=$(timed vm2_takeover expect_ok VolumeDriver.Mount '{"Name":"fenced","ID":"d2"}' | json Mountpoint) || die "takeover"
dev=$(findmnt -n -o SOURCE "$mp")
slave=$(ls /sys/block/$(dm_kname "$dev")/slaves | head -1)
result "vm2_pr_keys=$(sg_persist -n -i -k /dev/$slave | grep -c '^ *0x')"
result "vm2_lines_at_takeover=$(grep -c . "$mp/log")"
cp "$mp/log" "$SHARE/log.at-takeover"
signal vm2-took
wait_for vm1-done 300
sync; echo 3 > /proc/sys/vm/drop_caches
# Read from the device (debugfs), not through the mount: on a loaded machine this host can fence
# itself too (a missed renewal; seen in CI), and its mount then reads EIO.
debugfs -R 'cat /log' "$dev" > /tmp/log.now 2>/dev/null
result "vm2_log_unchanged_after_vm1_thawed=$(cmp -s /tmp/log.now "$SHARE/log.at-takeover" && echo yes || echo no)"
result "vm2_log_cmp=$(cmp /tmp/log.now "$SHARE/log.at-takeover" 2>&1 | head -1 | tr ' ' _)" "vm2_log_bytes=$(stat -c %s /tmp/log.now)"
expect_ok VolumeDriver.Unmount '{"Name":"fenced","ID":"d2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"moved"}' >/dev/null
result "vm2_sessions_end=$(sessions) vm2_disks_end=$(scsi_disks) vm2_maps_end=$(dm_maps)"
exit 0
