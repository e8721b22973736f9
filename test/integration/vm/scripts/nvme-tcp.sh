# NVMe/TCP in one VM: Linux's nvmet (configfs) as the array on 127.0.0.1:4420 and 127.0.0.2:4420,
# the kernel's nvme-tcp initiator driven by ballast's NvmeTcpAttacher (nvme-attach.mjs): attach
# over both portals (native multipath: one device), data, detach leaving no controller, a host
# the subsystem does not allow, a namespace that never shows, and the fence (the namespace
# disabled at the array: the holder's direct writes fail).
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
modprobe -a configfs nvmet nvmet-tcp nvme-tcp nvme-fabrics || die "nvme modules"
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
N=/sys/kernel/config/nvmet
NQN=nqn.2026-12.dev.ballast:array1
NGUID=4f6e3a2b00000001a1b2c3d4e5f60718
PORTALS=127.0.0.1:4420,127.0.0.2:4420
S=$N/subsystems/$NQN
cleanup() { # nothing connected or served when the VM powers off
  nvme disconnect --nqn="$NQN" >/dev/null 2>&1
  for p in 1 2; do rm -f "$N/ports/$p/subsystems/$NQN"; done
}
trap cleanup EXIT

# The array: one subsystem, one file-backed namespace with that NGUID, no host allowed yet. The
# file on a tmpfs of its own: on the VM's overlay root nvmet reads its size as 0.
mkdir -p /srv/nvmet && mount -t tmpfs -o size=80M tmpfs /srv/nvmet && truncate -s 64M /srv/nvmet/ns1.img || die "namespace file"
IMG=/srv/nvmet/ns1.img
mkdir "$S" && echo 0 > "$S/attr_allow_any_host" || die "subsystem"
mkdir "$S/namespaces/1" || die "namespace"
printf %s "$IMG" > "$S/namespaces/1/device_path"
echo 1 > "$S/namespaces/1/buffered_io" # tmpfs has no O_DIRECT
echo "${NGUID:0:8}-${NGUID:8:4}-${NGUID:12:4}-${NGUID:16:4}-${NGUID:20}" > "$S/namespaces/1/device_nguid" || die "device_nguid"
echo 1 > "$S/namespaces/1/enable" || die "enable the namespace"
for p in 1 2; do
  mkdir "$N/ports/$p" && echo tcp > "$N/ports/$p/addr_trtype" && echo ipv4 > "$N/ports/$p/addr_adrfam" &&
    echo "127.0.0.$p" > "$N/ports/$p/addr_traddr" && echo 4420 > "$N/ports/$p/addr_trsvcid" &&
    ln -s "$S" "$N/ports/$p/subsystems/$NQN" || die "port $p"
done

attacher_start "$BALLAST_SRC/test/integration/vm/scripts/nvme-attach.mjs"
controllers() { ls /sys/class/nvme 2>/dev/null | wc -l; }
namespaces() { ls /sys/block | grep -cE '^nvme[0-9]+n[0-9]+$' || true; } # heads, not the per-path nvmeXcYnZ
ac identify
HOSTNQN=$AC_nqn
result "identify_ok=$AC_ok host_nqn_matches_file=$([ "$HOSTNQN" = "$(cat /etc/nvme/hostnqn)" ] && echo yes || echo no)"

# A host the subsystem does not allow: refused at connect on both portals, nothing left.
ac attach "$NQN" "$NGUID" "$PORTALS"
result "refused_ok=$AC_ok refused_ms=$AC_ms refused_controllers=$(controllers)"
save refused-error "$AC_error"

mkdir "$N/hosts/$HOSTNQN" && ln -s "$N/hosts/$HOSTNQN" "$S/allowed_hosts/$HOSTNQN" || die "allow this host"
ac attach "$NQN" "$NGUID" "$PORTALS"
[ "$AC_ok" = 1 ] || die "attach: $AC_error"
DEV=$AC_device
head=${DEV#/dev/}
result "attach_ms=$AC_ms device=$DEV controllers=$(controllers) namespaces=$(namespaces) wwid=$(cat /sys/block/$head/wwid) nguid=$(tr -d '-' < /sys/block/$head/nguid)"
result "paths_live=$(grep -l live /sys/class/nvme/*/state | wc -l)"
mkfs.ext4 -q -F "$DEV" && mkdir -p /mnt/nv && mount "$DEV" /mnt/nv || die "mkfs/mount $DEV"
head -c 8M /dev/urandom > /mnt/nv/data && sync
SUM=$(sha256sum < /mnt/nv/data)
umount /mnt/nv
ac detach "$NQN" "$NGUID" "$PORTALS" "$DEV"
result "detach_ok=$AC_ok detach_ms=$AC_ms controllers_after_detach=$(controllers) namespaces_after_detach=$(namespaces)"

# The namespace disabled at the array (what ballast's fence does there): a new attach waits for it
# within its bound, names it, and disconnects again.
echo 0 > "$S/namespaces/1/enable"
ac attach "$NQN" "$NGUID" "$PORTALS"
result "disabled_ok=$AC_ok disabled_ms=$AC_ms disabled_controllers=$(controllers)"
save disabled-error "$AC_error"
echo 1 > "$S/namespaces/1/enable"

ac attach "$NQN" "$NGUID" "$PORTALS"
[ "$AC_ok" = 1 ] || die "attach again: $AC_error"
DEV=$AC_device
mount "$DEV" /mnt/nv || die "mount again"
result "data_intact=$([ "$(sha256sum < /mnt/nv/data)" = "$SUM" ] && echo yes || echo no)"
umount /mnt/nv
# The fence: the holder's namespace disabled at the array while connected; its direct write fails
# (nocreat: once the kernel drops the namespace, dd must not create a file where the device was).
echo 0 > "$S/namespaces/1/enable"
if timeout 60 dd if=/dev/zero of="$DEV" bs=4k count=1 oflag=direct conv=nocreat 2>/tmp/fence-dd.err; then rc=0; else rc=$?; fi
result "fenced_write_rc=$rc fenced_write_error=$(tr ' ' _ < /tmp/fence-dd.err | head -c 80)"
ac detach "$NQN" "$NGUID" "$PORTALS" "$DEV"
result "fenced_detach_ok=$AC_ok controllers_end=$(controllers) namespaces_end=$(namespaces)"
save fenced-detach-error "${AC_error:-}"
attacher_stop
. "$BALLAST_SRC/test/integration/vm/scripts/powerflex-nvme.sh"
exit 0
