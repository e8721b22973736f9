# The array VM of the FC benchmark (bench/fc-bench.ts): LIO with tcm_fc on both FCoE ports and an
# sshd through which the host VM's ballast daemon manages it. As the SAN administrator would, the
# target ports and an ACL (no LUNs) per host initiator WWPN exist before the host logs in;
# ballast maps each volume's LUN in those ACLs, and the bench's by-hand baseline maps its own.
# When the host is done, reports what is left in LIO's configfs.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"
lio_prepare
read -r -a ports <<<"$FC_ARRAY_WWPNS"
read -r -a peers <<<"$FC_LINK_PEERS"
for i in "${!ports[@]}"; do
  lio_fc_port "${ports[$i]}"
  mkdir -p "$LIO/fc/$(colons "${ports[$i]}")/tpgt_1/acls/$(colons "${peers[$i]}")" || die "ACL for ${peers[$i]}"
done

# sshd for the host's daemon: keys made by the bench in the share.
array_sshd

for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
signal array-ready

wait_for bench-done 3600
# What the host's daemon (and the by-hand baseline) left in LIO: LUNs on the ports, LUNs mapped
# in ACLs, storage objects.
luns=$(find "$LIO/fc" -mindepth 4 -maxdepth 4 -path '*/lun/lun_*' | wc -l)
mapped=$(find "$LIO/fc" -mindepth 5 -maxdepth 5 -path '*/acls/*/lun_*' | wc -l)
objects=$(find "$LIO/core" -mindepth 2 -maxdepth 2 -path '*/fileio_*/*' -type d | wc -l)
result "array_left_luns=$luns array_left_mapped_luns=$mapped array_left_objects=$objects"
array_sshd_stop
exit 0
