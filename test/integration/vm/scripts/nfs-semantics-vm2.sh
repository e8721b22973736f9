# Host 2 of the NFS semantics run (nfs-semantics.test.ts): the races, the reader of the
# visibility parts; its clock runs 45 s ahead for the second CAS phase.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-lib.sh"
scripts=$BALLAST_SRC/test/integration/vm/scripts
nfs_mount /mnt/nfs
grep ' nfs4 ' /proc/self/mountinfo > "$SHARE/mountinfo-vm2"
node "$scripts/nfs-races.mjs" vm2 vm1 /mnt/nfs || die "the races failed"
node "$scripts/nfs-cas-stress.mjs" vm2 vm1 /mnt/nfs 1 || die "CAS phase 1 failed"
date -s "@$(( $(date +%s) + 45 ))" >/dev/null || die "cannot set the clock"
node "$scripts/nfs-cas-stress.mjs" vm2 vm1 /mnt/nfs 2 || die "CAS phase 2 failed"
umount /mnt/nfs || die "cannot unmount the export"
