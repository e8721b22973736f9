# The array VM of fc-fabric.test.ts: LIO tcm_fc on both FCoE ports, three fileio LUNs. The host
# VM's initiator ports see the port's LUN 0 as LUN 3 and LUN 1 as LUN 300; LUN 7 exists on the
# ports but no ACL maps it. Configured before the ports come up (pitfall 1 of fcoe-lab.md).
# Env (besides fc-lib.sh's): FC_SERIALS = three vpd_unit_serials (disk0 disk1 disk2).
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"

result "array_script_start_s=$(now)"
t0=$(now)
lio_prepare
result "array_modules_s=$(since "$t0")"
t0=$(now)
read -r -a serials <<<"$FC_SERIALS"
for i in 0 1 2; do lio_fileio "disk$i" "/tmp/fc-array/disk$i.img" 64M "${serials[$i]}"; done
for w in $FC_ARRAY_WWPNS; do
  lio_fc_port "$w"
  lio_fc_lun "$w" 0 disk0
  lio_fc_lun "$w" 1 disk1
  lio_fc_lun "$w" 7 disk2
  for i in $FC_HOST_WWPNS; do
    lio_fc_acl "$w" "$i" 3 0
    lio_fc_acl "$w" "$i" 300 1
  done
done
result "array_lio_s=$(since "$t0")"
array_sshd # for the host's ballast daemon (backends.lio over SSH)
t0=$(now)
for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
result "array_fcoe_up_s=$(since "$t0")"
signal array-ready
result "array_ready_s=$(now)"

wait_for host-done 1500
# The host probed LUN 7, which no ACL maps: LIO says so in its log.
result "array_nonexistent_lun_logs=$(dmesg | grep -c 'NON_EXISTENT_LUN' || true)"
# What ballast's daemon left: storage objects of its own, LUNs beyond the three of this script.
result "array_ballast_objects=$(ls -d $LIO/core/*/ballast-* 2>/dev/null | wc -l) array_port_luns=$(ls -d $LIO/fc/*/tpgt_1/lun/lun_* | wc -l)"
array_sshd_stop

