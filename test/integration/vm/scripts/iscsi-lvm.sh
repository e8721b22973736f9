# One VM as array and host, the profile's volumes as LVM logical volumes (a volume group on a
# loop device in the VM), exported by tgtd over two portals.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
start_tgtd
truncate -s 400M /tmp/pv.img
modprobe loop && udevadm settle
pv=$(losetup --find --show /tmp/pv.img) || die "losetup"
pvcreate -q "$pv" && vgcreate -q ballastvg "$pv" || die "vgcreate"
{ base_config vm1; cat <<YAML
backends:
  iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], pool: $BALLAST_RUN/pool}
profiles:
  default: {backend: iscsi, volume_group: ballastvg}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
lv_bytes() { lvs --noheadings --units b --nosuffix -o lv_size ballastvg/ballast-lv1 2>/dev/null | tr -d ' '; }

expect_ok VolumeDriver.Create '{"Name":"lv1","Opts":{"size":"64M"}}' >/dev/null
result "lv_bytes_created=$(lv_bytes)"
mp=$(expect_ok VolumeDriver.Mount '{"Name":"lv1","ID":"c1"}' | json Mountpoint) || die "mount"
result "backing=$(tgtadm --lld iscsi --mode target --op show | sed -n 's/^ *Backing store path: \(\/.*\)$/\1/p')"
result "device=$(findmnt -n -o SOURCE "$mp")"
head -c 8M /dev/urandom > "$mp/data" && sync
sum=$(sha256sum < "$mp/data")
ballast volume grow lv1 128M >/dev/null || die "grow"
result "lv_bytes_grown=$(lv_bytes)"
result "fs_bytes_grown=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
expect_ok VolumeDriver.Unmount '{"Name":"lv1","ID":"c1"}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"lv1","ID":"c2"}' | json Mountpoint) || die "remount"
result "data_intact=$([ "$(sha256sum < "$mp/data")" = "$sum" ] && echo yes || echo no)"
expect_ok VolumeDriver.Unmount '{"Name":"lv1","ID":"c2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"lv1"}' >/dev/null
result "lvs_after_remove=$(lvs --noheadings -o lv_name ballastvg | grep -c . || true)"
result "sessions_end=$(sessions) disks_end=$(scsi_disks) maps_end=$(dm_maps)"
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
exit 0
