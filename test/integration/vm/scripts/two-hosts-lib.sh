# Two VMs = two hosts with their own kernels, one array on the host (tgtd, reached at 10.0.2.2
# through qemu's user network; managed over SSH). They coordinate through files in $SHARE, a
# host directory both mount; the host test reads them too (and SIGSTOPs vm1 at "vm1-holding").
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"

wait_for() { # FILE [SECONDS]
  for _ in $(seq $(( ${2:-240} * 5 ))); do [ -e "$SHARE/$1" ] && return 0; sleep 0.2; done
  die "waited too long for $1"
}
signal() { touch "$SHARE/$1"; }

start_two_hosts_ballast() {
  { base_config $BALLAST_VM_NAME; cat <<YAML
log: {level: debug}
lease: {seconds: 20, renew_every: 1, fence_after: 12, mount_wait: 100}
backends:
  iscsi:
    portals: ["10.0.2.2:$ISCSI_PORT"]
    pool: $POOL
    array:
      tgt_control_port: $TGT_CONTROL_PORT
      ssh: {host: 10.0.2.2, port: $SSH_PORT, user: root, private_key_file: $SSH_KEY, host_key_sha256: "$SSH_HOST_KEY"}
profiles:
  default: {backend: iscsi}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
}
