# Shared by the NFS scenarios: VMs are NFS clients of a private ganesha on the host, reached at
# 10.0.2.2:$NFS_PORT (qemu's user network maps it to the host's 127.0.0.1). Two VMs coordinate
# through files in $SHARE, a host directory both mount (9p, cache=none).
# Sourced with BALLAST_SRC, BALLAST_RUN, NFS_PORT and SHARE set.
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"

NFS_SERVER=10.0.2.2

# nfs_mount DIR [EXTRA_OPTS]: mounts the export at DIR (NFSv4.2, hard, fresh positive lookups).
nfs_mount() {
  local dir=$1 extra=${2:+,$2}
  # Both VMs reach the server from the same address: the client ID must come from the name.
  modprobe sunrpc && modprobe nfs nfs4_unique_id="$BALLAST_VM_NAME" && modprobe nfsv4 || die "cannot load the NFS modules"
  mkdir -p "$dir"
  timeout 60 mount -t nfs4 -o "vers=4.2,port=$NFS_PORT,hard,lookupcache=positive$extra" "$NFS_SERVER:/export" "$dir" \
    || die "cannot mount $NFS_SERVER:/export (port $NFS_PORT) at $dir"
}

# nfs_cut / nfs_heal: partition this VM from the server (both directions), and undo it.
nfs_cut() {
  modprobe -a nf_tables nft_compat x_tables 2>/dev/null
  iptables -I OUTPUT -d "$NFS_SERVER" -j DROP && iptables -I INPUT -s "$NFS_SERVER" -j DROP || die "iptables cut failed"
}
nfs_heal() {
  iptables -D OUTPUT -d "$NFS_SERVER" -j DROP && iptables -D INPUT -s "$NFS_SERVER" -j DROP || die "iptables heal failed"
}

wait_for() { # FILE [SECONDS]: waits for $SHARE/FILE
  for _ in $(seq $(( ${2:-240} * 5 ))); do [ -e "$SHARE/$1" ] && return 0; sleep 0.2; done
  die "waited too long for $1"
}
signal() { touch "$SHARE/$1"; }
