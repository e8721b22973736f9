# The host VM of fc-fabric.test.ts: FCoE initiator on both links (two fabrics), then ballast's
# FcAttacher (through fc-attach.mjs) on LUN 3, 300, 7 (unmapped) and on a WWPN nobody has.
# Each step's outcome is a RESULT line; longer texts (errors) go to $SHARE/out/<key>.
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"

trap 'rc=$?; [ $rc -eq 0 ] || { echo "--- host dmesg"; dmesg | tail -n 40; echo "--- rports"; rports_dump; multipath -ll; } >&2' EXIT
result "host_script_start_s=$(now)"
fcoe_prepare
result "scan_mode=$(cat /sys/module/scsi_mod/parameters/scan)"
MNT=/mnt/fc
DATA=/tmp/fc-data
head -c 16M /dev/urandom > "$DATA"
DATA_SHA=$(sha256sum < "$DATA" | cut -d' ' -f1)

# fa COMMAND ARGS: one command of fc-attach.mjs, which runs as a coprocess (one node for the
# whole scenario); sets FA_ok, FA_ms, FA_device, FA_wwpns, FA_attached, FA_error.
coproc FA_PROC { exec node "$BALLAST_SRC/test/integration/vm/scripts/fc-attach.mjs" 2>>"$BALLAST_VM_LOGS/fc-attach-stderr.log"; }
fa() {
  local line k
  FA_ok=0 FA_ms= FA_device= FA_wwpns= FA_attached= FA_error="no answer from fc-attach.mjs within 300 s"
  echo "$*" >&"${FA_PROC[1]}" || die "fc-attach.mjs is gone (see fc-attach-stderr.log)"
  while IFS= read -r -t 300 -u "${FA_PROC[0]}" line && [ "$line" != . ]; do
    k=${line%%=*}
    case $k in ok|ms|device|wwpns|attached|error) printf -v "FA_$k" '%s' "${line#*=}" ;; esac
  done
  [ "$FA_ok" = 1 ] && FA_error=
}
dm_of() { dm_kname "$1"; }                                       # /dev/mapper/X -> dm-N
map_paths() { ls "/sys/block/$(dm_of "$1")/slaves" 2>/dev/null | wc -l; }
path_wwid() { local s; s=$(ls "/sys/block/$(dm_of "$1")/slaves" | head -n1); cat "/sys/block/$s/device/wwid" 2>/dev/null; }
# paths_in STATE DEV: the map's paths that dm counts as A(ctive) or F(ailed), from its status
# ("... 8:0 A 0 0 1 ... 8:16 F 1 0 1"): the kernel's view, without running path checkers.
paths_in() { dmsetup status "$(cat "/sys/block/$(dm_of "$2")/dm/name")" 2>/dev/null | grep -oE "[0-9]+:[0-9]+ $1 " | wc -l; }
rports_online() {
  local n=0 w
  for w in $FC_ARRAY_WWPNS; do rport_ready "$w" && n=$((n + 1)); done
  echo $n
}
leftovers() { # PREFIX: what an attach/detach left behind
  result "${1}_fc_devices=$(fc_scsi_devices) ${1}_sd=$(scsi_disks) ${1}_maps=$(dm_maps) ${1}_rports=$(rports_online)"
}

wait_for array-ready 300
result "host_fabric_start_s=$(now)"
# IPv4 on the first link, beside FCoE: a refused TCP connection is an answer from the array's kernel.
ip_out=$(timeout 10 bash -c "exec 3<>/dev/tcp/$FC_PEER_IP/9" 2>&1)
case $ip_out in *refused*) result "ip_reachable=yes" ;; *) result "ip_reachable=no"; save ip-error "$ip_out" ;; esac

t0=$(now)
for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
login=$(wait_rports $FC_ARRAY_WWPNS 90) || die "the array's ports did not log in"
result "fcoe_up_s=$(since "$t0") login_s=$login rports_online=$(rports_online)"
hosts=$(for h in /sys/class/fc_host/host*; do cat "$h/port_name"; done | sort | tr '\n' , )
result "fc_host_port_names=${hosts%,} fc_devices_at_login=$(fc_scsi_devices)"

fa identify
result "identify_ok=$FA_ok identify_ms=$FA_ms identify_wwpns=$FA_wwpns"

# --- LUN 3: attach, filesystem, detach, attach again --------------------------
fa attach 3
[ "$FA_ok" = 1 ] || { save attach3-error "$FA_error"; die "attach LUN 3: $FA_error"; }
DEV=$FA_device
result "attach3_ms=$FA_ms attach3_device=$DEV attach3_paths=$(map_paths "$DEV") attach3_active=$(paths_in A "$DEV") attach3_wwid=$(path_wwid "$DEV")"
result "attach3_fc_devices=$(fc_scsi_devices)"
save attach3-multipath "$(multipath -ll 2>&1)"
fa is-attached 3 "$DEV"
result "attached3=$FA_attached"

mkfs.ext4 -q -F "$DEV" 2>"$SHARE/out/mkfs-stderr" || die "mkfs.ext4 $DEV"
mkdir -p "$MNT" && mount "$DEV" "$MNT" || die "mount $DEV"
cp "$DATA" "$MNT/a" && sync || die "write $MNT/a"

cp "$DATA" "$MNT/b" && sync || die "write $MNT/b"
# No path fault here: taking one fabric down and up again hung the array VM's kernel (LIO in
# core_tmr_lun_reset, tasks blocked > 120 s) in a loaded CI run, after the re-login did not come
# back within dev_loss_tmo. The failover itself worked; see the issue-10 note.

umount "$MNT" || die "umount $MNT"
fa detach 3 "$DEV"
result "detach3_ok=$FA_ok detach3_ms=$FA_ms"
[ "$FA_ok" = 1 ] || save detach3-error "$FA_error"
leftovers after_detach3
fa is-attached 3 "$DEV"
result "attached3_after_detach=$FA_attached"

fa attach 3
[ "$FA_ok" = 1 ] || { save reattach3-error "$FA_error"; die "attach LUN 3 again: $FA_error"; }
DEV=$FA_device
result "reattach3_ms=$FA_ms reattach3_paths=$(map_paths "$DEV")"
mount -o ro "$DEV" "$MNT" || die "mount $DEV again"
a_sha=$(sha256sum < "$MNT/a" | cut -d' ' -f1)
b_sha=$(sha256sum < "$MNT/b" | cut -d' ' -f1)
result "reattach3_sha_ok=$([ "$a_sha" = "$DATA_SHA" ] && [ "$b_sha" = "$DATA_SHA" ] && echo yes || echo no)"
umount "$MNT" || die "umount $MNT"
fa detach 3 "$DEV"
result "detach3b_ok=$FA_ok detach3b_ms=$FA_ms"
leftovers after_detach3b

# --- LUN 300 (above 255: SAM flat addressing) ---------------------------------------------------
fa attach 300
if [ "$FA_ok" = 1 ]; then
  DEV=$FA_device
  result "attach300_ok=1 attach300_ms=$FA_ms attach300_paths=$(map_paths "$DEV") attach300_active=$(paths_in A "$DEV") attach300_wwid=$(path_wwid "$DEV") attach300_fc_devices=$(fc_scsi_devices)"
  fa detach 300 "$DEV"
  result "detach300_ok=$FA_ok detach300_ms=$FA_ms"
else
  result "attach300_ok=0 attach300_ms=$FA_ms"
  save attach300-error "$FA_error"
fi
leftovers after_300

# --- LUN 7: on the array's ports, but no ACL maps it to this host ------------------------------
fa attach 7
result "lun7_ok=$FA_ok lun7_ms=$FA_ms"
save lun7-error "$FA_error"
leftovers lun7
[ "$FA_ok" = 1 ] && fa detach 7 "$FA_device"

# --- a target WWPN no port has (with LUN 3, which the real ports do map: a scan written to them
# would show up as devices) ---------------------------------------------------------------------
fa attach 3 2000525400000199
result "bogus_ok=$FA_ok bogus_ms=$FA_ms"
save bogus-error "$FA_error"
leftovers bogus
[ "$FA_ok" = 1 ] && fa detach 3 "$FA_device" 2000525400000199

signal host-done
result "host_done_s=$(now)"
