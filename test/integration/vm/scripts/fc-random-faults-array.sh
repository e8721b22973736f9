# The array VM of fc-random-faults.test.ts: LIO tcm_fc on an FCoE port per link (two links to each
# host VM), managed by the hosts' ballast daemons over SSH (backends.lio, pool /tmp/fc-pool). Every
# host WWPN gets an ACL on every port before the ports come up (pitfall 1 of fcoe-lab.md: no ACL
# at login, no FCP Target role); the ACLs map a placeholder LUN 0 that ballast never uses. Once
# both hosts ended, the volumes' images go to $SHARE/images/<volume>.img for the checker.
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"

lio_prepare
lio_fileio placeholder /tmp/fc-array/placeholder.img 1M 00000000-0000-4000-8000-000000000001
for w in $FC_ARRAY_WWPNS; do
  lio_fc_port "$w"
  lio_fc_lun "$w" 0 placeholder
  for i in $FC_HOST_WWPNS; do lio_fc_acl "$w" "$i" 0 0; done
done
mkdir -p /tmp/fc-pool
array_sshd
for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
signal array-ready
result "array_ready_s=$(now)"

# The hosts' agents touch <vm>.ended when they exit, whatever happened.
for vm in vm1 vm2; do wait_for "$vm.ended" 1500; done
mkdir -p "$SHARE/images"
for d in /tmp/fc-pool/*/; do
  v=$(basename "$d")
  [ -e "$d/disk.img" ] && cp --sparse=always "$d/disk.img" "$SHARE/images/$v.img"
done
result "array_ballast_objects=$(ls -d $LIO/core/*/ballast-* 2>/dev/null | wc -l) array_images=$(ls "$SHARE/images" | wc -l)"
array_sshd_stop
