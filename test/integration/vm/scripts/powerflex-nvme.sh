# PowerFlex over NVMe/TCP, sourced at the end of nvme-tcp.sh (one VM boot): the PowerFlex
# simulator with nvmet as its data plane on 127.0.0.1:4421 and 127.0.0.2:4421, ballast's
# powerflex driver, lease and NvmeTcpAttacher (powerflex-nvme.mjs): create, map and attach as
# this host, mkfs, mount, write; detach leaves no controller; a takeover by another host unmaps
# this one at the array, and its direct writes fail; delete leaves nothing on the array.
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
ac stop
attacher_stop
result "pf_subsystems_end=$(ls /sys/kernel/config/nvmet/subsystems | grep -c powerflex || true) pf_namespaces_end=$(namespaces)"
umount "$PF_IMAGES"
