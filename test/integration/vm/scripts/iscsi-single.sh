# One VM, the array on the same host (tgtd, hyper-converged), two portals -> dm-multipath.
# Profile lvm keeps its volumes as LVM logical volumes (a volume group on a loop device in the
# VM: LVM needs device-mapper, which only the VM lab's kernel has here).
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
start_tgtd
truncate -s 400M /tmp/pv.img
modprobe loop && udevadm settle
pv=$(losetup --find --show /tmp/pv.img) || die "losetup"
pvcreate -q "$pv" && vgcreate -q ballastvg "$pv" || die "vgcreate"
{ base_config vm1; cat <<YAML
log: {level: debug}
backends:
  iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], pool: $BALLAST_RUN/pool}
encryption: {key_dir: $BALLAST_RUN/keys}
profiles:
  default: {backend: iscsi}
  lvm: {backend: iscsi, volume_group: ballastvg, pool: $BALLAST_RUN/lvpool}
YAML
} > "$BALLAST_RUN/config.yml"
mkdir -p -m 700 "$BALLAST_RUN/keys"
head -c 64 /dev/urandom > "$BALLAST_RUN/keys/enc.key" && chmod 600 "$BALLAST_RUN/keys/enc.key"
start_ballast

expect_ok VolumeDriver.Create '{"Name":"v1","Opts":{"size":"64M"}}' >/dev/null
mp=$(timed mount_new expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c1"}' | json Mountpoint) || die "mount"
dev=$(findmnt -n -o SOURCE "$mp")
dm=$(dm_kname "$dev")
result "device=$dev"
result "paths=$(ls /sys/block/$dm/slaves | wc -l)"
result "dm_uuid=$(cat /sys/block/$dm/dm/uuid)"
result "sessions_mounted=$(sessions)"
slave=$(ls /sys/block/$dm/slaves | head -1)
result "reservation=$(sg_persist -n -i -r /dev/$slave | grep -o 'type: .*' | tr ' ' _)"
result "pr_keys=$(sg_persist -n -i -k /dev/$slave | grep -c '^ *0x')"

head -c 8M /dev/urandom > "$mp/data" && sync
sum1=$(sha256sum < "$mp/data")

# A path goes down while a writer runs: the map keeps the volume usable over the other one.
dd if=/dev/urandom of="$mp/during" bs=64k count=160 oflag=direct 2>/dev/null &
writer=$!
second=$(ls /sys/block/$dm/slaves | tail -1)
echo offline > /sys/block/$second/device/state
wait $writer; result "write_with_path_down_rc=$?"
sum_during=$(sha256sum < "$mp/during")
sync; echo 3 > /proc/sys/vm/drop_caches
result "during_intact=$([ "$(sha256sum < "$mp/during")" = "$sum_during" ] && echo yes || echo no)"
# The map fails the path on I/O or at multipathd's next check (every 5 s).
seen=no
for _ in $(seq 40); do multipathd show paths format '%d %t %T' | grep -Eq "^$second .*(failed|faulty)" && { seen=yes; break; }; sleep 0.5; done
result "path_failed_seen=$seen"
result "active_paths_while_down=$(multipathd show paths format '%d %t' | grep -c ' active')"
echo running > /sys/block/$second/device/state
for _ in $(seq 60); do [ "$(multipathd show paths format '%d %t' | grep -c ' active')" = 2 ] && break; sleep 0.5; done
result "active_paths_after=$(multipathd show paths format '%d %t' | grep -c ' active')"

# Online grow of the mounted volume.
before=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')
ballast volume grow v1 128M >/dev/null || die "grow"
result "grow_before=$before"
result "grow_after=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
result "device_bytes=$(blockdev --getsize64 "$dev")"

timed unmount expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c1"}' >/dev/null
result "sessions_after_unmount=$(sessions)"
result "disks_after_unmount=$(scsi_disks)"
result "maps_after_unmount=$(dm_maps)"

mp=$(timed mount_existing expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c2"}' | json Mountpoint) || die "remount"
result "data_intact=$([ "$(sha256sum < "$mp/data")" = "$sum1" ] && echo yes || echo no)"
result "size_after_remount=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"v1"}' >/dev/null
result "targets_after_remove=$(tgtadm --lld iscsi --mode target --op show | grep -c '^Target')"
result "pool_after_remove=$(ls "$BALLAST_RUN/pool" | wc -l)"
result "sessions_end=$(sessions) disks_end=$(scsi_disks) maps_end=$(dm_maps)"

# The lvm profile: a logical volume of the requested size as the LUN, grown online.
lv_bytes() { lvs --noheadings --units b --nosuffix -o lv_size ballastvg/ballast-lv1 2>/dev/null | tr -d ' '; }
expect_ok VolumeDriver.Create '{"Name":"lv1","Opts":{"size":"64M","profile":"lvm"}}' >/dev/null
result "lv_bytes_created=$(lv_bytes)"
mp=$(expect_ok VolumeDriver.Mount '{"Name":"lv1","ID":"c1"}' | json Mountpoint) || die "mount lv1"
result "lv_backing=$(tgtadm --lld iscsi --mode target --op show | sed -n 's/^ *Backing store path: \(\/.*\)$/\1/p')"
result "lv_device=$(findmnt -n -o SOURCE "$mp")"
head -c 8M /dev/urandom > "$mp/data" && sync
sum=$(sha256sum < "$mp/data")
ballast volume grow lv1 128M >/dev/null || die "grow lv1"
result "lv_bytes_grown=$(lv_bytes)"
result "lv_fs_bytes_grown=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
expect_ok VolumeDriver.Unmount '{"Name":"lv1","ID":"c1"}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"lv1","ID":"c2"}' | json Mountpoint) || die "remount lv1"
result "lv_data_intact=$([ "$(sha256sum < "$mp/data")" = "$sum" ] && echo yes || echo no)"
expect_ok VolumeDriver.Unmount '{"Name":"lv1","ID":"c2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"lv1"}' >/dev/null
result "lvs_after_remove=$(lvs --noheadings -o lv_name ballastvg | grep -c . || true)"
result "lv_sessions_end=$(sessions) lv_disks_end=$(scsi_disks) lv_maps_end=$(dm_maps)"
# An encrypted volume on the lvm profile: LUKS2 on the multipath map, grown online (the LV, the
# map, the LUKS mapping, the filesystem), ciphertext only in the logical volume.
MARKER=ballast-iscsi-plaintext-3c7d
expect_ok VolumeDriver.Create '{"Name":"enc","Opts":{"size":"64M","profile":"lvm","encrypted":"true"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"enc","ID":"e1"}' | json Mountpoint) || die "mount enc"
result "enc_device=$(findmnt -n -o SOURCE "$mp")"
result "enc_under=$(lsblk -ndo TYPE "/dev/$(ls /sys/block/$(dm_kname "$(findmnt -n -o SOURCE "$mp")")/slaves | head -1)")"
for _ in $(seq 500); do echo "$MARKER"; done > "$mp/secret" && sync
ballast volume grow enc 128M >/dev/null || die "grow enc"
result "enc_mapped_bytes_grown=$(blockdev --getsize64 "$(findmnt -n -o SOURCE "$mp")")"
result "enc_fs_bytes_grown=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
expect_ok VolumeDriver.Unmount '{"Name":"enc","ID":"e1"}' >/dev/null
result "enc_plaintext_in_lv=$(grep -c "$MARKER" /dev/ballastvg/ballast-enc || true)"
result "enc_luks_on_lv=$(cryptsetup isLuks /dev/ballastvg/ballast-enc && echo yes || echo no)"
mp=$(expect_ok VolumeDriver.Mount '{"Name":"enc","ID":"e2"}' | json Mountpoint) || die "remount enc"
result "enc_data_intact=$(grep -c "$MARKER" "$mp/secret")"
expect_ok VolumeDriver.Unmount '{"Name":"enc","ID":"e2"}' >/dev/null
expect_ok VolumeDriver.Remove '{"Name":"enc"}' >/dev/null
result "enc_sessions_end=$(sessions) enc_maps_end=$(dm_maps)"

# Snapshots and clones on the lvm profile: LVM snapshots of the logical volume, clones copied by dd.
# (A clone without the dd fails three checks. Its extents may hold what lv1 and enc left there.)
snap_t0=$(date +%s)
expect_ok VolumeDriver.Create '{"Name":"src","Opts":{"size":"32M","profile":"lvm"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"src","ID":"s1"}' | json Mountpoint) || die "mount src"
head -c 4M /dev/urandom > "$mp/a" && head -c 2M /dev/zero > "$mp/zeros" && sync
sum_a=$(sha256sum < "$mp/a")
# Mounted here: frozen (fsfreeze) while lvcreate -s runs.
snap=$(timed snapshot call Ballast.SnapshotCreate '{"Volume":"src","Name":"s1"}' | tail -1)
[ -z "$(echo "$snap" | json Err)" ] || die "snapshot: $snap"
result "snapshot_reply=$(echo "$snap" | jq -jr '.Snapshot | "\(.method),\(.sizeBytes),\(.fstype)"')"
snap_lv=$(lvs --noheadings -o lv_name -S 'origin=ballast-src' ballastvg | tr -d ' ')
result "snap_lv=$snap_lv"
result "snap_lv_bytes=$(lvs --noheadings --units b --nosuffix -o lv_size "ballastvg/$snap_lv" | tr -d ' ')"
# Written after the snapshot: in the live clone only.
dd if=/dev/urandom of="$mp/a" bs=1M count=1 conv=notrunc status=none && head -c 1M /dev/urandom > "$mp/b" && sync
sum_a2=$(sha256sum < "$mp/a")
timed clone_snapshot expect_ok VolumeDriver.Create '{"Name":"cs","Opts":{"from":"src@s1"}}' >/dev/null
timed clone_live expect_ok VolumeDriver.Create '{"Name":"cl","Opts":{"from":"src","size":"64M"}}' >/dev/null
result "lvs_after_clones=$(lvs --noheadings -o lv_name ballastvg | tr -d ' ' | sort | paste -sd,)"
# Before the clone is mounted (which writes to it): byte for byte the snapshot.
result "clone_snapshot_raw_equal=$(cmp -s -n $((32 << 20)) "/dev/ballastvg/$snap_lv" /dev/ballastvg/ballast-cs && echo yes || echo no)"
expect_ok VolumeDriver.Unmount '{"Name":"src","ID":"s1"}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"cs","ID":"x1"}' | json Mountpoint) || die "mount cs"
result "clone_snapshot_a=$([ "$(sha256sum < "$mp/a")" = "$sum_a" ] && echo snapshot || echo other)"
result "clone_snapshot_b=$([ -e "$mp/b" ] && echo present || echo absent)"
result "clone_snapshot_zeros=$(cmp -s -n $((2 << 20)) "$mp/zeros" /dev/zero && echo zero || echo other)"
expect_ok VolumeDriver.Unmount '{"Name":"cs","ID":"x1"}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"cl","ID":"x2"}' | json Mountpoint) || die "mount cl"
result "clone_live_a=$([ "$(sha256sum < "$mp/a")" = "$sum_a2" ] && echo later || echo other)"
result "clone_live_b=$([ -e "$mp/b" ] && echo present || echo absent)"
result "clone_live_fs_bytes=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')"
result "clone_live_lun=$(tgtadm --lld iscsi --mode target --op show | grep -c 'Backing store path: /dev/ballastvg/ballast-cl')"
expect_ok VolumeDriver.Unmount '{"Name":"cl","ID":"x2"}' >/dev/null
# The record is the snapshot's tags: a restarted daemon lists it.
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
mv "$BALLAST_VM_LOGS/ballast.log" "$BALLAST_VM_LOGS/ballast-before-restart.log"
rm -f "$BALLAST_RUN/ballast.sock" # start_ballast waits for the socket: not the old one's
start_ballast
result "snapshot_ls_after_restart=$(expect_ok Ballast.Snapshots '{"Volume":"src"}' | jq -jr '[.Snapshots[] | "\(.volume)@\(.name):\(.method):\(.sizeBytes)"] | join(",")')"
result "remove_with_snapshot=$(call VolumeDriver.Remove '{"Name":"src"}' | json Err | grep -o 'has 1 snapshot(s) (s1)' | tr ' ' _)"
result "remove_with_snapshot_lv=$(lvs --noheadings -o lv_name ballastvg/ballast-src 2>/dev/null | tr -d ' ')"
timed snapshot_rm expect_ok Ballast.SnapshotRemove '{"Volume":"src","Name":"s1"}' >/dev/null
result "snapshot_ls_after_rm=$(expect_ok Ballast.Snapshots '{"Volume":"src"}' | jq -r '.Snapshots | length')"
for v in src cs cl; do expect_ok VolumeDriver.Remove "{\"Name\":\"$v\"}" >/dev/null; done
result "snap_lvs_end=$(lvs --noheadings -o lv_name ballastvg | grep -c . || true)"
result "snap_sessions_end=$(sessions) snap_maps_end=$(dm_maps) snap_section_s=$(( $(date +%s) - snap_t0 ))"
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
exit 0
