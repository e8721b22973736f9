# Host 1 of the NFS semantics run (nfs-semantics.test.ts): the races, the writer of the
# visibility parts, and the creator of the CAS volume. Host 2 is nfs-semantics-vm2.sh.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-lib.sh"
scripts=$BALLAST_SRC/test/integration/vm/scripts
nfs_mount /mnt/nfs
grep ' nfs4 ' /proc/self/mountinfo > "$SHARE/mountinfo-vm1"
result "recover_lost_locks=$(cat /sys/module/nfs/parameters/recover_lost_locks)"
node "$scripts/nfs-races.mjs" vm1 vm2 /mnt/nfs || die "the races failed"
node "$scripts/nfs-cas-stress.mjs" vm1 vm2 /mnt/nfs 1 create || die "CAS phase 1 failed"
node "$scripts/nfs-cas-stress.mjs" vm1 vm2 /mnt/nfs 2 || die "CAS phase 2 failed"
umount /mnt/nfs || die "cannot unmount the export"
