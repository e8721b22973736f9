# One host of nfs-random-faults.test.ts (both VMs run this): ballast with its loop root on a
# private ganesha's export, driven by random-faults.mjs's agent; the coordinator on the host
# draws the steps. Lease 12 s, renewed every 1 s, fence after 6 s; mount_wait 0, so a Mount of a
# volume another host holds fails at once and a later step tries again. backends.loop.fence is
# left at auto (nfs-lock on NFSv4.2), unless the test passes LOOP_FENCE.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-lib.sh"
trap 'touch "$SHARE/$BALLAST_VM_NAME.ended"' EXIT
modprobe loop || die "cannot load the loop module"
nfs_mount /mnt/nfs
mkdir -p /mnt/nfs/loop
{ base_config "$BALLAST_VM_NAME"; cat <<YAML
log: {level: debug, file: $BALLAST_VM_LOGS/ballast.log}
lease: {seconds: 12, renew_every: 1, fence_after: 6, mount_wait: 0}
backends: {loop: {root: /mnt/nfs/loop, shared: true${LOOP_FENCE:+, fence: $LOOP_FENCE}}}
profiles: {default: {backend: loop}}
YAML
} > "$BALLAST_RUN/config.yml"
fault_agent
# A healed host whose NFS mount is fine can sync at power-off; a still-cut one must not try.
iptables -F 2>/dev/null
umount -l /mnt/nfs 2>/dev/null
exit 0
