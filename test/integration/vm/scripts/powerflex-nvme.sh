# PowerFlex over NVMe/TCP, sourced at the end of nvme-tcp.sh (one VM boot): the PowerFlex
# simulator with nvmet as its data plane on 127.0.0.1:4421 and 127.0.0.2:4421, ballast's
# powerflex driver, lease and NvmeTcpAttacher (powerflex-nvme.mjs): create, map and attach as
# this host, mkfs, mount, write; detach leaves no controller; a takeover by another host unmaps
# this one at the array, and its direct writes fail; delete leaves nothing on the array. Then
# snapshots and clones (snapshotVolumes; the simulator copies the nvmet file): the data of each
# clone read back over NVMe/TCP at several offsets.
PF_IMAGES=/srv/powerflex
mkdir -p "$PF_IMAGES" && mount -t tmpfs -o size=300M tmpfs "$PF_IMAGES" || die "powerflex image dir"
export PF_IMAGES PF_PORTALS=127.0.0.1:4421,127.0.0.2:4421
attacher_start "$BALLAST_SRC/test/integration/vm/scripts/powerflex-nvme.mjs"
ac create pfvol 1
[ "$AC_ok" = 1 ] || die "powerflex create: $AC_error"
result "pf_create_ms=$AC_ms pf_size_kb=$AC_size_kb"
ac attach pfvol
[ "$AC_ok" = 1 ] || die "powerflex attach: $AC_error"
PFDEV=$AC_device
result "pf_attach_ms=$AC_ms pf_device=$PFDEV pf_mapped=$AC_mapped pf_controllers=$(controllers) pf_nguid_matches=$([ "$(tr -d '-' < /sys/block/${PFDEV#/dev/}/nguid)" = "$AC_nguid" ] && echo yes || echo no)"
udevadm settle
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$PFDEV" >/tmp/pf-mkfs.err 2>&1 || die "mkfs $PFDEV: $(tr '\n' ' ' < /tmp/pf-mkfs.err | tail -c 300)"
mkdir -p /mnt/pf && mount "$PFDEV" /mnt/pf 2>/tmp/pf-mount.err || die "mount $PFDEV: $(tr '\n' ' ' < /tmp/pf-mount.err; dmesg | tail -5 | tr '\n' ' ')"
head -c 8M /dev/urandom > /mnt/pf/data && sync
PFSUM=$(sha256sum < /mnt/pf/data)
umount /mnt/pf
ac detach pfvol "$PFDEV"
result "pf_detach_ok=$AC_ok pf_detach_ms=$AC_ms pf_mapped_after_detach=$AC_mapped pf_controllers_after_detach=$(controllers)"
save pf-detach-error "${AC_error:-}"

# Mounted again: the data is there. Then another host takes the volume over (this one stopped
# renewing): its export unmaps this host at the array, and this host's direct write fails
# (looked at before the new holder's namespace is made: nvmet would show that one here too).
ac attach pfvol
[ "$AC_ok" = 1 ] || die "powerflex attach again: $AC_error"
PFDEV=$AC_device
mount "$PFDEV" /mnt/pf || die "mount again"
result "pf_data_intact=$([ "$(sha256sum < /mnt/pf/data)" = "$PFSUM" ] && echo yes || echo no)"
umount /mnt/pf
ac takeover pfvol
result "pf_takeover_ok=$AC_ok pf_takeover_generation=${AC_generation:-} pf_mapped_after_takeover=${AC_mapped:-}"
save pf-takeover-error "${AC_error:-}"
if timeout 60 dd if=/dev/zero of="$PFDEV" bs=4k count=1 oflag=direct conv=nocreat 2>/tmp/pf-fence.err; then rc=0; else rc=$?; fi
result "pf_fenced_write_rc=$rc pf_fenced_write_error=$(tr ' ' _ < /tmp/pf-fence.err | head -c 80)"
ac expose
ac detach-only pfvol "$PFDEV"
result "pf_fenced_detach_ok=$AC_ok pf_fenced_controllers_after_detach=$(controllers)"
ac release-b pfvol
result "pf_release_b_ok=$AC_ok pf_mapped_end=${AC_mapped:-}"
ac destroy pfvol
result "pf_destroy_ok=$AC_ok pf_volumes_end=${AC_volumes:-} pf_files_end=${AC_files:-}"
save pf-destroy-error "${AC_error:-}"

# Snapshots and clones. A volume with io limits (on its mapping, at the simulated array); data A
# written through NVMe/TCP at three offsets (start, 3 GiB + 12 MiB, the last 64 KiB), a snapshot,
# data B over it; clones of the snapshot (8 GiB) and of the volume as it is now (9 GiB: grown to
# two 8 GiB steps), each attached over NVMe/TCP and read back at the same offsets.
PF_SNAP_T0=$(date +%s%N)
PF_BLOCKS="0 49344 131071" # in 64 KiB blocks of the 8 GiB volume
pf_write() { for b in $PF_BLOCKS; do head -c 64K /dev/urandom | dd of="$1" bs=64K seek="$b" count=1 oflag=direct conv=notrunc status=none || return 1; done; }
pf_read() { for b in $PF_BLOCKS; do dd if="$1" bs=64K skip="$b" count=1 iflag=direct status=none; done | sha256sum | cut -c1-16; }
ac create pfsrc 1 2000 100
[ "$AC_ok" = 1 ] || die "powerflex create pfsrc: $AC_error"
ac attach pfsrc
[ "$AC_ok" = 1 ] || die "powerflex attach pfsrc: $AC_error"
SRCDEV=$AC_device
result "pf_src_limits=$AC_limits"
pf_write "$SRCDEV" || die "write A to $SRCDEV"
PF_A=$(pf_read "$SRCDEV")
ac snapshot pfsrc s1
result "pf_snapshot_ok=$AC_ok pf_snapshot_ms=$AC_ms pf_snapshot_name=${AC_pf_name:-} pf_snapshot_ancestor_ok=${AC_ancestor_ok:-}"
save pf-snapshot-error "${AC_error:-}"
pf_write "$SRCDEV" || die "write B to $SRCDEV"
PF_B=$(pf_read "$SRCDEV")
ac detach pfsrc "$SRCDEV"
[ "$AC_ok" = 1 ] || die "powerflex detach pfsrc: $AC_error"
ac clone pfsnapc pfsrc s1 1
result "pf_clone_snap_ok=$AC_ok pf_clone_snap_ms=$AC_ms pf_clone_snap_size_kb=${AC_size_kb:-} pf_clone_snap_ancestor_ok=${AC_ancestor_ok:-}"
save pf-clone-snap-error "${AC_error:-}"
ac clone pflivec pfsrc - 9
result "pf_clone_live_ok=$AC_ok pf_clone_live_ms=$AC_ms pf_clone_live_size_kb=${AC_size_kb:-} pf_clone_live_ancestor_ok=${AC_ancestor_ok:-}"
save pf-clone-live-error "${AC_error:-}"
for c in pfsnapc pflivec; do
  ac attach "$c"
  [ "$AC_ok" = 1 ] || die "powerflex attach $c: $AC_error"
  CDEV=$AC_device
  DATA=$(pf_read "$CDEV")
  result "pf_${c}_matches=$([ "$DATA" = "$PF_A" ] && echo A || { [ "$DATA" = "$PF_B" ] && echo B || echo neither; }) pf_${c}_dev_bytes=$(blockdev --getsize64 "$CDEV") pf_${c}_limits=$AC_limits"
  ac detach "$c" "$CDEV"
  [ "$AC_ok" = 1 ] || die "powerflex detach $c: $AC_error"
done
result "pf_a_differs_from_b=$([ "$PF_A" != "$PF_B" ] && echo yes || echo no)"
ac snapshot-rm pfsrc s1
result "pf_snapshot_rm_ok=$AC_ok pf_volumes_after_snapshot_rm=${AC_volumes:-}"
for v in pfsnapc pflivec pfsrc; do ac destroy "$v"; done
result "pf_snap_destroy_ok=$AC_ok pf_snap_volumes_end=${AC_volumes:-} pf_snap_files_end=${AC_files:-} pf_snap_controllers_end=$(controllers) pf_snap_section_ms=$((($(date +%s%N) - PF_SNAP_T0) / 1000000))"
save pf-snap-destroy-error "${AC_error:-}"
ac stop
attacher_stop
result "pf_subsystems_end=$(ls /sys/kernel/config/nvmet/subsystems | grep -c powerflex || true) pf_namespaces_end=$(namespaces)"
umount "$PF_IMAGES"
