# One host of fc-random-faults.test.ts (both host VMs run this): an FCoE initiator on two links
# (two fabrics, two paths, dm-multipath) to the array VM's LIO, ballast's backends.lio over FC with
# the array managed over SSH, driven by random-faults.mjs's agent; the coordinator on the lab
# machine draws the steps. Lease 20 s, renewed every 1 s, fence after 12 s; mount_wait 0 (longer
# than on iSCSI and NFS: renewals go over SSH to an emulated array VM beside two emulated hosts,
# and with 6 s even a quiet host missed fence_after now and then, refusing its Mounts).
# Reservations (the array's fence, PREEMPT AND ABORT over FC) on.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"
trap 'touch "$SHARE/$BALLAST_VM_NAME.ended"' EXIT
fcoe_prepare
wait_for array-ready 600
for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
login=$(wait_rports $FC_MY_TARGETS 120) || die "the array's ports did not log in"
result "${BALLAST_VM_NAME}_login_s=$login"
{ base_config "$BALLAST_VM_NAME"; cat <<YAML
log: {level: debug, file: $BALLAST_VM_LOGS/ballast.log}
lease: {seconds: 20, renew_every: 1, fence_after: 12, mount_wait: 0}
YAML
lio_array_yaml /tmp/fc-pool; cat <<YAML
profiles: {default: {backend: lio}}
YAML
} > "$BALLAST_RUN/config.yml"
fault_agent
iptables -F 2>/dev/null
exit 0
