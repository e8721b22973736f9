# Host 2 on Cinder: starts while host 1 works, then mounts the volume host 1 released, checks
# the data, unmounts and removes it.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/cinder-lib.sh"
start_cinder_ballast
wait_for vm1-moved 400
reply=$(timed vm2_mount expect_ok VolumeDriver.Mount '{"Name":"cmoved","ID":"c2"}') || die "mount cmoved on host 2"
mp=$(echo "$reply" | json Mountpoint)
result "vm2_chap=$(chap_of)"
result "moved_intact=$([ "$(sha256sum < "$mp/data" | cut -d' ' -f1)" = "$(cat "$SHARE/cmoved.sha")" ] && echo yes || echo no)"
expect_ok VolumeDriver.Unmount '{"Name":"cmoved","ID":"c2"}' >/dev/null
result "vm2_sessions_after_unmount=$(sessions) vm2_disks_after_unmount=$(scsi_disks)"
expect_ok VolumeDriver.Remove '{"Name":"cmoved"}' >/dev/null
result "vm2_removed=yes"
exit 0
