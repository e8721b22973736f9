# One VM, LIO in its kernel as the array (hyper-converged): the daemon over iSCSI with CHAP and
# reservations on two portals, then the driver's FC side (lio-fc-driver.mjs) on configfs.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
modprobe -a configfs target_core_mod target_core_file target_core_iblock iscsi_target_mod tcm_fc || die "LIO modules"
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
T=/sys/kernel/config/target
SECRET=lio-chap-secret-$RANDOM$RANDOM
{ base_config vm1; cat <<YAML
log: {level: debug}
backends:
  lio:
    pool: $BALLAST_RUN/pool
    iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], chap: {username: ballast, password: $SECRET}}
profiles:
  default: {backend: lio}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast

expect_ok VolumeDriver.Create '{"Name":"v1","Opts":{"size":"64M"}}' >/dev/null
mp=$(timed mount_new expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c1"}' | json Mountpoint) || die "mount"
dev=$(findmnt -n -o SOURCE "$mp")
dm=$(basename "$(readlink -f "$dev")")
tpg=$T/iscsi/iqn.2026-11.dev.ballast:v1/tpgt_1
result "device=$dev paths=$(ls /sys/block/$dm/slaves | wc -l) sessions_mounted=$(sessions)"
result "acls=$(ls $tpg/acls | tr '\n' ,) chap_user=$(cat $tpg/acls/$BALLAST_VM_IQN/auth/userid) auth=$(cat $tpg/attrib/authentication) portals=$(ls $tpg/np | tr '\n' ,)"
result "objects_mounted=$(ls -d $T/core/fileio_*/ballast-* 2>/dev/null | wc -l)"
slave=$(ls /sys/block/$dm/slaves | head -1)
result "reservation=$(sg_persist -n -i -r /dev/$slave | grep -o 'type: .*' | tr ' ' _) pr_keys=$(sg_persist -n -i -k /dev/$slave | grep -c '^ *0x')"
result "secret_in_log=$(grep -c -- "$SECRET" "$BALLAST_VM_LOGS/ballast.log")"

head -c 8M /dev/urandom > "$mp/data" && sync
sum1=$(sha256sum < "$mp/data")
timed unmount expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c1"}' >/dev/null
result "sessions_after_unmount=$(sessions) disks_after_unmount=$(scsi_disks) maps_after_unmount=$(dm_maps)"
result "targets_after_unmount=$(ls $T/iscsi | grep -c '^iqn') objects_after_unmount=$(ls -d $T/core/fileio_*/ballast-* 2>/dev/null | wc -l)"

# Grown while unmounted: the next export serves the new size, the filesystem follows at mount.
ballast volume grow v1 128M >/dev/null || die "grow"
mp=$(timed mount_existing expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c2"}' | json Mountpoint) || die "remount"
result "data_intact=$([ "$(sha256sum < "$mp/data")" = "$sum1" ] && echo yes || echo no)"
result "size_after_grow=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ') device_bytes=$(blockdev --getsize64 "$(findmnt -n -o SOURCE "$mp")")"
# A restarted daemon finds the volume's LIO objects again instead of adding a second set.
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
start_ballast
expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c3"}' >/dev/null
result "targets_after_restart=$(ls $T/iscsi | grep -c '^iqn') objects_after_restart=$(ls -d $T/core/fileio_*/ballast-* | wc -l) luns_after_restart=$(ls $tpg/lun | wc -l) acls_after_restart=$(ls $tpg/acls | wc -l)"
expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c3"}' >/dev/null
expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"v1"}' >/dev/null
result "targets_after_remove=$(ls $T/iscsi | grep -c '^iqn') objects_after_remove=$(ls -d $T/core/fileio_*/ballast-* 2>/dev/null | wc -l) pool_after_remove=$(ls "$BALLAST_RUN/pool" | grep -vc '^\.hosts$')"
result "sessions_end=$(sessions) disks_end=$(scsi_disks) maps_end=$(dm_maps)"
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null

# The FC side of the driver: LUNs and ACLs in configfs (no fabric here: fc-fabric.test.ts has one).
node "$BALLAST_SRC/test/integration/vm/scripts/lio-fc-driver.mjs" "$BALLAST_RUN/fcpool" || die "lio-fc-driver.mjs"
exit 0
