# One host of iscsi-random-faults.test.ts (both VMs run this): ballast on a tgtd array on the
# host, reached over two portals (two paths, dm-multipath) and managed over SSH, driven by
# random-faults.mjs's agent; the coordinator on the host draws the steps. Lease 20 s, renewed
# every 1 s, fence after 12 s, as on FC: renewals go over SSH from an emulated CPU, and with 6 s a
# host busy mounting missed fence_after (a CI run fenced 4 of 6 mount sessions, 3 lines acknowledged
# in all). mount_wait 0, so a Mount of a volume another host holds fails at once and a later step
# tries again. Reservations (the array's fence) stay on unless the test
# passes RESERVATIONS=false.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
trap 'touch "$SHARE/$BALLAST_VM_NAME.ended"' EXIT
{ base_config "$BALLAST_VM_NAME"; cat <<YAML
log: {level: debug, file: $BALLAST_VM_LOGS/ballast.log}
lease: {seconds: 20, renew_every: 1, fence_after: 12, mount_wait: 0}
backends:
  iscsi:
    portals: ["10.0.2.2:$ISCSI_PORT", "10.0.2.2:$ISCSI_PORT2"]
    pool: $POOL
    reservations: ${RESERVATIONS:-true}
    array:
      tgt_control_port: $TGT_CONTROL_PORT
      ssh: {host: 10.0.2.2, port: $SSH_PORT, user: root, private_key_file: $SSH_KEY, host_key_sha256: "$SSH_HOST_KEY"}
profiles: {default: {backend: iscsi}}
YAML
} > "$BALLAST_RUN/config.yml"
fault_agent
iptables -F 2>/dev/null
exit 0
