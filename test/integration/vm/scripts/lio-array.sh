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
dm=$(dm_kname "$dev")
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

# PREEMPT AND ABORT on LIO: two hosts as two initiator names of this kernel (an open-iscsi iface
# each: two I_T nexuses to one LUN), host 2 taking the reservation over from host 1.
PT=iqn.2026-11.dev.ballast:pr
H2=iqn.2026-11.dev.ballast:h2
G=$T/iscsi/$PT/tpgt_1
truncate -s 16M /tmp/pr.img
mkdir -p $T/core/fileio_1/pr && echo "fd_dev_name=/tmp/pr.img,fd_dev_size=16777216" > $T/core/fileio_1/pr/control && echo 1 > $T/core/fileio_1/pr/enable
mkdir -p $G/lun/lun_0 $G/np/127.0.0.1:3260 && ln -s $T/core/fileio_1/pr $G/lun/lun_0/pr
echo 0 > $G/attrib/generate_node_acls; echo 0 > $G/attrib/authentication
for i in "$BALLAST_VM_IQN" "$H2"; do mkdir -p $G/acls/$i/lun_0 && ln -s $G/lun/lun_0 $G/acls/$i/lun_0/m; done
echo 1 > $G/enable
iscsiadm -m iface -I h2 -o new >/dev/null && iscsiadm -m iface -I h2 -o update -n iface.initiatorname -v "$H2" >/dev/null || die "iface h2"
for iface in default h2; do
  iscsiadm -m node -T $PT -p 127.0.0.1:3260 -I $iface -o new >/dev/null && iscsiadm -m node -T $PT -p 127.0.0.1:3260 -I $iface --login >/dev/null || die "login via $iface"
done
udevadm settle
disk_of() { # initiator name -> the disk of its session
  local s; for s in /sys/class/iscsi_session/session*; do
    [ "$(cat $s/initiatorname)" = "$1" ] && ls $s/device/target*/*/block 2>/dev/null | head -1
  done
}
for _ in $(seq 50); do d1=$(disk_of "$BALLAST_VM_IQN"); d2=$(disk_of "$H2"); [ -n "$d1" ] && [ -n "$d2" ] && break; sleep 0.2; done
[ -n "$d1" ] && [ -n "$d2" ] || die "no disks for the two initiators"
node "$BALLAST_SRC/test/integration/vm/scripts/lio-preempt.mjs" "$d1" "$d2" "$BALLAST_VM_LOGS/preempt.log" || die "lio-preempt.mjs"
result "pr_fallback_logged=$(grep -c 'does not support PREEMPT AND ABORT' "$BALLAST_VM_LOGS/preempt.log")"
if dd if=/dev/zero of=/dev/$d1 bs=4k count=1 oflag=direct 2>/tmp/pr-dd.err; then rc=0; else rc=$?; fi
result "pr_host1_write_rc=$rc pr_host1_write_error=$(tr ' ' _ < /tmp/pr-dd.err | head -c 80)"
dd if=/dev/zero of=/dev/$d2 bs=4k count=1 oflag=direct 2>/dev/null; result "pr_host2_write_rc=$?"
multipath -F >/dev/null 2>&1 || true # multipathd joined the two disks (one WWID): let them go first
iscsiadm -m node -T $PT --logout >/dev/null; iscsiadm -m node -T $PT -o delete >/dev/null
result "pr_sessions_end=$(sessions)"
exit 0
