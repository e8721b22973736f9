# Two VMs = two hosts, one real Cinder on this host (its API and tgt portal reached at 10.0.2.2
# through qemu's user network). They coordinate through files in $SHARE, as the two-hosts
# scenarios do.
. "$BALLAST_SRC/test/integration/vm/scripts/two-hosts-lib.sh"

start_cinder_ballast() {
  { base_config $BALLAST_VM_NAME; cat <<YAML
log: {level: debug}
backends:
  cinder:
    url: http://10.0.2.2:$CINDER_API_PORT/v3
    auth: {type: noauth, project_id: $CINDER_PROJECT}
    multipath: false
    reservations: true
    timeout_seconds: 120
profiles:
  default: {backend: cinder}
YAML
} > "$BALLAST_RUN/config.yml"
  start_ballast
}
# The CHAP method and user open-iscsi logged in with (from its node record of the target).
chap_of() { iscsiadm -m node -o show 2>/dev/null | awk -F' = ' '/node.session.auth.authmethod/ {m=$2} /node.session.auth.username / {u=$2} END {print m "/" u}'; }
