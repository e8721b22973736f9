# Shared by the FC scenarios (test/lab/fc.ts runFcLab): an "array" VM (LIO tcm_fc
# target) and "host" VMs (fcoe initiator), each link between them one FCoE VN2VN fabric.
# Sourced with BALLAST_SRC, SHARE, FC_ROLE, FC_MACS, FC_LINK_IPS, FC_ARRAY_WWPNS, FC_HOST_WWPNS set.
# WWPNs are written as 16 lower-case hex digits (sysfs shows them as 0x...; configfs wants colons).
# Recipe and pitfalls: /work/shared/research/fcoe-lab.md.
[ -n "${FC_LIB_LOADED:-}" ] && return 0
FC_LIB_LOADED=1
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"

LIO=/sys/kernel/config/target
now() { cut -d' ' -f1 /proc/uptime; }                         # this VM's monotonic seconds
since() { awk "BEGIN { printf \"%.1f\", $(now) - $1 }"; }
signal() { touch "$SHARE/$1"; }
wait_for() { # FILE [SECONDS]: waits for $SHARE/FILE
  for _ in $(seq $(( ${2:-240} * 10 ))); do [ -e "$SHARE/$1" ] && return 0; nap 0.1; done
  die "waited too long for $1"
}
colons() { local w=$1 o=; while [ -n "$w" ]; do o+=${w:0:2}:; w=${w:2}; done; echo "${o%:}"; } # 2000525400000101 -> 20:00:52:54:00:00:01:01

# nic_by_mac MAC: the interface with that MAC (names depend on PCI slots: do not assume ens4).
nic_by_mac() {
  local f
  for f in /sys/class/net/*/address; do
    [ "$(cat "$f")" = "$1" ] && { f=${f%/address}; echo "${f##*/}"; return 0; }
  done
  return 1
}

# fc_links_up: this VM's link NICs (FC_MACS, in order) up with MTU 9000 (an FC frame is 2 KiB
# and more), FC_LINK_IPS on them; sets FC_NICS. runFcLab's wrapper runs it before the scenario.
# FCoE needs a lossless Ethernet (PFC on real switches): libfc does not resend a lost frame. The
# default qdisc, fq_codel, drops frames that waited over 5 ms, which TCG bursts of a big write
# do: the write then never completes on the array, and tcm_fc hangs for good in the LUN reset
# the host sends after its timeout (kworker blocked in core_tmr_lun_reset). A plain FIFO with
# room for everything queued only makes the writer wait.
fc_links_up() {
  local mac nic
  FC_NICS=
  mkdir -p "$SHARE/out"
  for mac in $FC_MACS; do
    for _ in $(seq 100); do nic=$(nic_by_mac "$mac") && break; sleep 0.1; done
    [ -n "$nic" ] || { echo "no NIC with MAC $mac" >&2; return 1; }
    ip link set "$nic" mtu 9000 up || return 1
    tc qdisc replace dev "$nic" root pfifo limit 100000 || return 1
    FC_NICS="${FC_NICS:+$FC_NICS }$nic"
  done
  # FC_LINK_IPS: an address (or "-") per link, in FC_MACS order.
  local nics=($FC_NICS) ips=($FC_LINK_IPS) i
  for i in "${!ips[@]}"; do
    [ "${ips[$i]}" = - ] || ip addr add "${ips[$i]}" dev "${nics[$i]}" || return 1
  done
  export FC_NICS
  echo "fc-lib: links $FC_NICS up, addresses $FC_LINK_IPS" >&2
}

# --- FCoE ports (both sides), through sysfs: no fcoe-utils needed ---------------------------

# fcoe_ctlr IF: the FCoE controller (ctlr_N) on that interface, if any.
fcoe_ctlr() {
  local c
  for c in /sys/bus/fcoe/devices/ctlr_*; do
    [ -e "$c" ] || continue
    c=$(readlink -f "$c")
    [ "$(basename "$(dirname "$c")")" = "$1" ] && { echo "${c##*/}"; return 0; }
  done
  return 1
}

# fcoe_up IF: creates and enables a VN2VN FCoE port on IF; prints its ctlr_N. The array's LIO
# WWN and ACLs must exist before the host enables its ports (a target role learnt later leaves
# the rport with scsi_target_id -1 until dev_loss_tmo).
fcoe_up() {
  local c
  echo "$1" > /sys/bus/fcoe/ctlr_create || { echo "fcoe: ctlr_create $1 failed" >&2; return 1; }
  c=$(fcoe_ctlr "$1") || { echo "fcoe: no ctlr for $1" >&2; return 1; }
  echo VN2VN > "/sys/bus/fcoe/devices/$c/mode" || return 1  # case-sensitive: VN2VN or Fabric
  echo 1 > "/sys/bus/fcoe/devices/$c/enabled" || return 1
  echo "$c"
}

# fcoe_set IF 0|1: disables / enables the port (a path fault on that fabric, and its repair).
fcoe_set() {
  local c
  c=$(fcoe_ctlr "$1") || { echo "fcoe: no ctlr for $1" >&2; return 1; }
  echo "$2" > "/sys/bus/fcoe/devices/$c/enabled"
}

# fcoe_down IF: disables the port, then removes it.
fcoe_down() {
  fcoe_set "$1" 0 && echo "$1" > /sys/bus/fcoe/ctlr_destroy
}

# rport_ready WWPN: an Online remote port with that name, role FCP Target and a SCSI target id.
rport_ready() {
  local r
  for r in /sys/class/fc_remote_ports/rport-*; do
    [ -e "$r/port_name" ] && [ "$(cat "$r/port_name")" = "0x$1" ] || continue
    [ "$(cat "$r/port_state")" = Online ] && grep -q 'FCP Target' "$r/roles" && [ "$(cat "$r/scsi_target_id")" != -1 ] && return 0
  done
  return 1
}
rports_dump() {
  local r
  for r in /sys/class/fc_remote_ports/rport-*; do
    [ -e "$r" ] && echo "${r##*/} $(cat "$r/port_name") $(cat "$r/port_state") [$(cat "$r/roles")] tid=$(cat "$r/scsi_target_id")"
  done
}

# wait_rports WWPN... TIMEOUT: until every WWPN is rport_ready; prints the seconds it took.
wait_rports() {
  local timeout=${*: -1} wwpns=("${@:1:$#-1}") t0 w ok
  t0=$(now)
  for _ in $(seq $(( timeout * 10 ))); do
    ok=1
    for w in "${wwpns[@]}"; do rport_ready "$w" || { ok=; break; }; done
    [ -n "$ok" ] && { since "$t0"; return 0; }
    sleep 0.1
  done
  { echo "remote ports not ready within $timeout s (want ${wwpns[*]}):"; rports_dump; } >&2
  return 1
}

# fc_scsi_devices: the SCSI devices (H:C:T:L) on this VM's FC hosts, comma-separated.
fc_scsi_devices() {
  local h d out=()
  for h in /sys/class/fc_host/host*; do
    [ -e "$h" ] || continue
    for d in /sys/class/scsi_device/"${h##*/host}":*; do [ -e "$d" ] && out+=("${d##*/}"); done
  done
  local IFS=,
  echo "${out[*]}"
}

# fcoe_prepare: the initiator side's modules (with stage2's multipathd: find_multipaths no).
fcoe_prepare() {
  modprobe -a libfcoe fcoe dm_multipath dm_round_robin dm_service_time scsi_dh_alua sd_mod sg || die "cannot load the FCoE initiator modules"
}

# --- LIO tcm_fc target (array side), raw configfs: no targetcli, no D-Bus ---------------------

# lio_prepare: the target and FCoE modules, configfs mounted.
lio_prepare() {
  modprobe -a configfs target_core_mod target_core_file tcm_fc libfcoe fcoe || die "cannot load the LIO / FCoE modules"
  mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config || die "cannot mount configfs"
  [ -d "$LIO" ] || die "no $LIO after loading target_core_mod"
  # LIO keeps reservation state under its dbroot (/etc/target if it existed when the module
  # loaded, else /var/target) and answers every PR command with NOT READY when <dbroot>/pr is
  # missing. ballast's driver makes it at its first export; the LUNs set up by hand need it first.
  mkdir -p "$(cat "$LIO/dbroot")/pr" || die "cannot create LIO's <dbroot>/pr"
}

# lio_fileio NAME FILE SIZE SERIAL: a fileio backstore over a sparse FILE of SIZE (64M, 1G, ...)
# whose vpd_unit_serial is SERIAL, i.e. its WWID is naa.6001405 + SERIAL's first 25 hex digits.
lio_fileio() {
  local d=$LIO/core/fileio_0/$1 bytes
  case $3 in *M) bytes=$(( ${3%M} << 20 )) ;; *G) bytes=$(( ${3%G} << 30 )) ;; *) bytes=$3 ;; esac
  mkdir -p "${2%/*}" && truncate -s "$bytes" "$2" || die "cannot create $2"
  mkdir -p "$d" || die "cannot create backstore $1"
  echo "fd_dev_name=$2,fd_dev_size=$bytes" > "$d/control" || die "backstore $1: control"
  echo "$4" > "$d/wwn/vpd_unit_serial" || die "backstore $1: vpd_unit_serial"
  echo 1 > "$d/enable" || die "backstore $1: enable"
}

# lio_fc_port WWPN: the tcm_fc target port (only tpgt_1 exists); WWPN must be a local FCoE
# port's name (the port answers the PRLIs that arrive for that name).
lio_fc_port() {
  local g; g=$LIO/fc/$(colons "$1")/tpgt_1
  mkdir -p "$g" || die "cannot create tcm_fc port $1"
  [ ! -e "$g/enable" ] || echo 1 > "$g/enable" || die "cannot enable tcm_fc port $1"
}

# lio_fc_lun WWPN LUN BACKSTORE: the port's LUN (the port-side number) over backstore NAME.
lio_fc_lun() {
  local g; g=$LIO/fc/$(colons "$1")/tpgt_1
  mkdir -p "$g/lun/lun_$2" && ln -s "$LIO/core/fileio_0/$3" "$g/lun/lun_$2/$3" || die "cannot export $3 as LUN $2 on $1"
}

# lio_fc_acl WWPN INITIATOR_WWPN MAPPED_LUN LUN: lets the initiator see the port's LUN as
# MAPPED_LUN (tcm_fc has no demo mode: no ACL, no access, and no FCP Target role at login).
lio_fc_acl() {
  local g a; g=$LIO/fc/$(colons "$1")/tpgt_1
  a=$g/acls/$(colons "$2")
  mkdir -p "$a/lun_$3" && ln -s "$g/lun/lun_$4" "$a/lun_$3/m" || die "cannot map LUN $4 of $1 as $3 for $2"
}


# --- SSH between a host VM and the array VM (keys from test/lab/fc.ts's arraySshKeys, in the share) ---

# array_sshd: an sshd on every address of the array VM, for the hosts' ballast daemons. Nothing
# of /etc/ssh is used. sshd runs every command through root's shell, and bash started by sshd
# reads ~/.bashrc: the lab machine's /root (seen through the VM's root overlay) has one that runs
# `pyenv init`, which cost every command 15-25 s under TCG. An empty home for root, in this VM only.
array_sshd() {
  mount -t tmpfs -o mode=0700 tmpfs /root || die "cannot give root an empty home"
  mkdir -p /run/sshd
  cat > /tmp/sshd_config <<CONF
ListenAddress 0.0.0.0
HostKey $SHARE/ssh/host_key
AuthorizedKeysFile $SHARE/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
PidFile /run/sshd-ballast.pid
CONF
  /usr/sbin/sshd -f /tmp/sshd_config -E "$BALLAST_VM_LOGS/sshd.log" || die "sshd"
}
array_sshd_stop() { kill "$(cat /run/sshd-ballast.pid 2>/dev/null)" 2>/dev/null; }

# on_array CMD...: runs CMD on the array VM as root (OpenSSH's client, a new connection each).
on_array() {
  [ -e /tmp/known_hosts ] || echo "$FC_PEER_IP $(cat "$SHARE/ssh/host_key.pub")" > /tmp/known_hosts
  ssh -i "$SHARE/ssh/client_key" -o BatchMode=yes -o UserKnownHostsFile=/tmp/known_hosts -o StrictHostKeyChecking=yes -o LogLevel=ERROR "root@$FC_PEER_IP" "$@"
}

# lio_array_yaml POOL: the ballast config lines of a backends.lio over FC on this lab's array,
# managed over SSH ($SSH_HOST_KEY: the array's host key fingerprint, from arraySshKeys).
lio_array_yaml() {
  local targets; targets=$(for w in $FC_MY_TARGETS; do printf '"%s", ' "$w"; done)
  cat <<YAML
backends:
  lio:
    pool: $1
    transport: fc
    fc: {target_wwpns: [${targets%, }]}
    array:
      ssh: {host: $FC_PEER_IP, user: root, private_key_file: $SHARE/ssh/client_key, host_key_sha256: "$SSH_HOST_KEY"}
YAML
}
