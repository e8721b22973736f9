# Host 1: creates and fills a volume, hands it to host 2 (move); then holds a second volume and
# writes to it until the host test freezes this whole VM. After it thaws, host 2 owns the volume:
# a raw write to the old device must be refused by the array (the reservation), not just by ballast.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/two-hosts-lib.sh"
start_two_hosts_ballast

expect_ok VolumeDriver.Create '{"Name":"moved","Opts":{"size":"64M"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"moved","ID":"c1"}' | json Mountpoint) || die "mount moved"
head -c 4M /dev/urandom > "$mp/data" && sync
sha256sum < "$mp/data" | cut -d' ' -f1 > "$SHARE/moved.sha"
timed vm1_unmount expect_ok VolumeDriver.Unmount '{"Name":"moved","ID":"c1"}' >/dev/null
result "vm1_sessions_after_unmount=$(sessions) vm1_disks_after_unmount=$(scsi_disks)"
signal vm1-moved

expect_ok VolumeDriver.Create '{"Name":"fenced","Opts":{"size":"64M"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"fenced","ID":"c2"}' | json Mountpoint) || die "mount fenced"
dev=$(findmnt -n -o SOURCE "$mp")
result "vm1_device=$dev"
# An acknowledged writer: each line is fsynced before the next; the host freezes us mid-stream.
( i=0; while :; do i=$((i+1)); echo "vm1 line $i" >> "$mp/log" && sync "$mp/log" || break; echo "$i" > /tmp/acked; done ) 2>/dev/null &
sleep 2
signal vm1-holding
wait_for vm2-took 400
# Thawed. The reservation now belongs to vm2: the array refuses this host's writes.
if dd if=/dev/zero of="$dev" bs=4k count=1 seek=4000 oflag=direct 2>/tmp/dd.err; then rc=0; else rc=$?; fi
result "vm1_raw_write_rc=$rc"
result "vm1_raw_write_error=$(tr ' ' _ < /tmp/dd.err | head -c 120)"
result "vm1_acked=$(cat /tmp/acked)"
cat /tmp/acked > "$SHARE/vm1.acked"
sleep 3 # ballast's next round notices the takeover and fences the filesystem
result "vm1_fenced=$(ballast volume ls 2>/dev/null | grep -c fenced || true)"
result "vm1_fence_log=$(grep -o '"message":"fence[^"]*"' "$BALLAST_VM_LOGS/ballast.log" | cut -d'"' -f4 | tr ' ' _ | paste -sd, -)"
signal vm1-done
exit 0
