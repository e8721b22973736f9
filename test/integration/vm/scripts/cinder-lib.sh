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
    multipath: true # the VMs run multipathd, which would grab a bare disk
    reservations: true
    timeout_seconds: 120
profiles:
  default: {backend: cinder}
YAML
} > "$BALLAST_RUN/config.yml"
  start_ballast
}
# The CHAP method and user open-iscsi logged in with: the node record of the one session's target.
chap_of() {
  local session portal target
  session=$(iscsiadm -m session 2>/dev/null | head -1) # "tcp: [1] 10.0.2.2:3260,1 iqn.... (non-flash)"
  portal=$(echo "$session" | awk '{print $3}' | cut -d, -f1)
  target=$(echo "$session" | awk '{print $4}')
  iscsiadm -m node -T "$target" -p "$portal" -o show 2>/dev/null |
    awk -F' = ' '$1 == "node.session.auth.authmethod" {m=$2} $1 == "node.session.auth.username" {u=$2} END {print m "/" u}'
}
