# Host 1 on Cinder: creates a volume, mounts it (Cinder's target, logged in to with the CHAP
# secret Cinder returned), writes, unmounts and hands it over to host 2.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/cinder-lib.sh"
start_cinder_ballast
expect_ok VolumeDriver.Create '{"Name":"cmoved","Opts":{"size":"1G"}}' >/dev/null
reply=$(timed vm1_mount expect_ok VolumeDriver.Mount '{"Name":"cmoved","ID":"c1"}') || die "mount cmoved"
mp=$(echo "$reply" | json Mountpoint)
result "vm1_chap=$(chap_of) vm1_sessions_mounted=$(sessions)"
head -c 4M /dev/urandom > "$mp/data" && sync
sha256sum < "$mp/data" | cut -d' ' -f1 > "$SHARE/cmoved.sha"
timed vm1_unmount expect_ok VolumeDriver.Unmount '{"Name":"cmoved","ID":"c1"}' >/dev/null
result "vm1_sessions_after_unmount=$(sessions) vm1_disks_after_unmount=$(scsi_disks)"
signal vm1-moved
exit 0
