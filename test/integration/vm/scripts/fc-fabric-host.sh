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

attacher_start "$BALLAST_SRC/test/integration/vm/scripts/fc-attach.mjs" # ac COMMAND ARGS: one command of it
dm_of() { dm_kname "$1"; }                                       # /dev/mapper/X -> dm-N
map_paths() { ls "/sys/block/$(dm_of "$1")/slaves" 2>/dev/null | wc -l; }
path_wwid() { local s; s=$(ls "/sys/block/$(dm_of "$1")/slaves" | head -n1); cat "/sys/block/$s/device/wwid" 2>/dev/null; }
# paths_in STATE DEV: the map's paths that dm counts as A(ctive) or F(ailed), from its status
# ("... 8:0 A 0 0 1 ... 8:16 F 1 0 1"): the kernel's view, without running path checkers.
paths_in() { dmsetup status "$(cat "/sys/block/$(dm_of "$2")/dm/name")" 2>/dev/null | grep -oE "[0-9]+:[0-9]+ $1 " | wc -l; }
# path_disks_via DEV NIC: DEV's path disks (sdX) reached through NIC's FCoE port.
path_disks_via() { local s; for s in $(ls "/sys/block/$(dm_of "$1")/slaves"); do readlink -f "/sys/block/$s" | grep -q "/net/$2/" && echo "$s"; done; }
# idle_within DISK SECONDS: until DISK has no request in flight.
idle_within() { local r w; for _ in $(seq $(( $2 * 10 ))); do read -r r w < "/sys/block/$1/inflight"; [ $((r + w)) -eq 0 ] && return 0; sleep 0.1; done; return 1; }
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

ac identify
result "identify_ok=$AC_ok identify_ms=$AC_ms identify_wwpns=$AC_wwpns"

# --- LUN 3: attach, filesystem, detach, attach again --------------------------
ac attach 3
[ "$AC_ok" = 1 ] || { save attach3-error "$AC_error"; die "attach LUN 3: $AC_error"; }
DEV=$AC_device
result "attach3_ms=$AC_ms attach3_device=$DEV attach3_paths=$(map_paths "$DEV") attach3_active=$(paths_in A "$DEV") attach3_wwid=$(path_wwid "$DEV")"
result "attach3_fc_devices=$(fc_scsi_devices)"
save attach3-multipath "$(multipath -ll 2>&1)"
ac is-attached 3 "$DEV"
result "attached3=$AC_attached"

mkfs.ext4 -q -F "$DEV" 2>"$SHARE/out/mkfs-stderr" || die "mkfs.ext4 $DEV"
mkdir -p "$MNT" && mount "$DEV" "$MNT" || die "mount $DEV"
cp "$DATA" "$MNT/a" && sync || die "write $MNT/a"

cp "$DATA" "$MNT/b" && sync || die "write $MNT/b"
# No path fault here: taking one fabric down and up again hung the array VM's kernel (LIO in
# core_tmr_lun_reset, tasks blocked > 120 s) in a loaded CI run, after the re-login did not come
# back within dev_loss_tmo. The failover itself worked; see the issue-10 note.

umount "$MNT" || die "umount $MNT"
ac detach 3 "$DEV"
result "detach3_ok=$AC_ok detach3_ms=$AC_ms"
[ "$AC_ok" = 1 ] || save detach3-error "$AC_error"
leftovers after_detach3
ac is-attached 3 "$DEV"
result "attached3_after_detach=$AC_attached"

ac attach 3
[ "$AC_ok" = 1 ] || { save reattach3-error "$AC_error"; die "attach LUN 3 again: $AC_error"; }
DEV=$AC_device
result "reattach3_ms=$AC_ms reattach3_paths=$(map_paths "$DEV")"
mount -o ro "$DEV" "$MNT" || die "mount $DEV again"
a_sha=$(sha256sum < "$MNT/a" | cut -d' ' -f1)
b_sha=$(sha256sum < "$MNT/b" | cut -d' ' -f1)
result "reattach3_sha_ok=$([ "$a_sha" = "$DATA_SHA" ] && [ "$b_sha" = "$DATA_SHA" ] && echo yes || echo no)"
umount "$MNT" || die "umount $MNT"

# --- PREEMPT AND ABORT over FC: this host's two initiator ports as two hosts (each its own I_T
# nexus to LUN 3), ballast's reservation fence taken by one, then by the other ------------------
pr_disks=($(ls "/sys/block/$(dm_of "$DEV")/slaves"))
fc_host_of() { local a; a=$(ls "/sys/block/$1/device/scsi_device"); cat "/sys/class/fc_host/host${a%%:*}/port_name"; }
result "pr_initiators=$(fc_host_of "${pr_disks[0]}"),$(fc_host_of "${pr_disks[1]}")"
ac reserve "${pr_disks[0]}" host1 1
result "pr_take1_ok=$AC_ok pr_key1=$AC_key pr_holder1=$AC_holder"
ac reserve "${pr_disks[1]}" host2 2
result "pr_take2_ok=$AC_ok pr_key2=$AC_key pr_preempted=$AC_preempted pr_holder2=$AC_holder pr_keys_after=$AC_keys"
[ -z "$AC_error" ] || save pr-error "$AC_error"
# Past the filesystem's data (LUN 3 is not read again): host 1's write is refused at the array.
if dd if=/dev/zero of="/dev/${pr_disks[0]}" bs=4k seek=12000 count=1 oflag=direct 2>/tmp/pr-dd.err; then rc=0; else rc=$?; fi
result "pr_host1_write_rc=$rc pr_host1_write_error=$(tr ' ' _ < /tmp/pr-dd.err | head -c 80)"
dd if=/dev/zero of="/dev/${pr_disks[1]}" bs=4k seek=12000 count=1 oflag=direct 2>/dev/null; result "pr_host2_write_rc=$?"
sg_persist -n -o -C -K "$AC_key" "/dev/${pr_disks[1]}" >/dev/null || die "clear the reservation of LUN 3"

ac detach 3 "$DEV"
result "detach3b_ok=$AC_ok detach3b_ms=$AC_ms"
leftovers after_detach3b

# --- LUN 300 (above 255: SAM flat addressing) ---------------------------------------------------
ac attach 300
if [ "$AC_ok" = 1 ]; then
  DEV=$AC_device
  result "attach300_ok=1 attach300_ms=$AC_ms attach300_paths=$(map_paths "$DEV") attach300_active=$(paths_in A "$DEV") attach300_wwid=$(path_wwid "$DEV") attach300_fc_devices=$(fc_scsi_devices)"
  ac detach 300 "$DEV"
  result "detach300_ok=$AC_ok detach300_ms=$AC_ms"
else
  result "attach300_ok=0 attach300_ms=$AC_ms"
  save attach300-error "$AC_error"
fi
leftovers after_300

# --- LUN 7: on the array's ports, but no ACL maps it to this host ------------------------------
ac attach 7
result "lun7_ok=$AC_ok lun7_ms=$AC_ms"
save lun7-error "$AC_error"
leftovers lun7
[ "$AC_ok" = 1 ] && ac detach 7 "$AC_device"

# --- a target WWPN no port has (with LUN 3, which the real ports do map: a scan written to them
# would show up as devices) ---------------------------------------------------------------------
ac attach 3 2000525400000199
result "bogus_ok=$AC_ok bogus_ms=$AC_ms"
save bogus-error "$AC_error"
leftovers bogus
[ "$AC_ok" = 1 ] && ac detach 3 "$AC_device" 2000525400000199

attacher_stop # fc-attach.mjs is done: its memory and CPU to the daemon

# --- the daemon over FC: backends.lio transport fc, the array VM's LIO managed over SSH -----------
# The array VM's configuration above stays (LUN 0, 1, 7 on the ports, 3 and 300 in the ACLs), as a
# SAN administrator's would: ballast takes the first LUN number nobody uses (2).
# The default lease and command bound with room for TCG on a shared machine (one SSH command has
# taken over 30 s there); neither changes what a Mount or Unmount does. Renewed every 30 s: one
# renewal is five SSH commands to the array, ~1 s each under emulation, so every 2 s kept both
# VMs busy renewing, back to back, for the whole scenario.
{ base_config host; cat <<YAML
log: {level: debug}
lease: {seconds: 180, renew_every: 30, fence_after: 150}
timeouts: {command_seconds: 90}
YAML
lio_array_yaml /tmp/fc-pool; cat <<YAML
profiles:
  default: {backend: lio}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
# on_array hands its words to the array's shell as one line: each command below is one word.
array_luns() { on_array "ls -d /sys/kernel/config/target/fc/*/tpgt_1/lun/lun_* | sed 's|.*/||' | sort -u | tr '\n' ' '"; }
array_objects() { on_array "ls -d /sys/kernel/config/target/core/*/ballast-* 2>/dev/null | wc -l"; }

expect_ok VolumeDriver.Create '{"Name":"v1","Opts":{"size":"64M"}}' >/dev/null
mp=$(timed d_mount_new expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c1"}' | json Mountpoint) || die "daemon: mount v1"
VDEV=$(findmnt -n -o SOURCE "$mp")
result "d_device=$VDEV d_paths=$(map_paths "$VDEV") d_active=$(paths_in A "$VDEV") d_fc_devices=$(fc_scsi_devices)"
vs=$(ls "/sys/block/$(dm_of "$VDEV")/slaves" | head -n1)
result "d_reservation=$(sg_persist -n -i -r "/dev/$vs" | grep -o 'type: .*' | tr ' ' _) d_pr_keys=$(sg_persist -n -i -k "/dev/$vs" | grep -c '^ *0x')"
result "d_array_luns=$(array_luns | tr ' ' ,) d_array_acl_maps=$(on_array "ls -d /sys/kernel/config/target/fc/*/tpgt_1/acls/*/lun_2 2>/dev/null | wc -l")"
cp "$DATA" "$mp/a" && sync || die "daemon: write a"

# One path lost during a write: the second fabric's path disk goes offline under the writer, then,
# once no command of it is in flight, the host's FCoE port on that fabric goes down (not up again:
# a re-login racing dev_loss_tmo hung the array's LIO under load once). Not the port alone: when
# it went down under a 1 MiB write in a CI run, the array kept it Online and a kworker of its hung.
# tcm_fc (drivers/target/tcm_fc/tfc_cmd.c, ft_recv_seq) only marks a write whose exchange failed
# as aborted, "XXX need to find cmd if queued", and the session's teardown waits for every
# command. A real array aborts such a write; the lab's cannot.
head -c 24M /dev/urandom > /tmp/fc-data-b
B_SHA=$(sha256sum < /tmp/fc-data-b | cut -d' ' -f1)
nics=($FC_NICS)
lost=$(path_disks_via "$VDEV" "${nics[1]}")
[ -n "$lost" ] || die "no path of $VDEV through ${nics[1]}"
dd if=/tmp/fc-data-b of="$mp/b" bs=1M oflag=direct 2>/tmp/fault-dd.err & WRITER=$!
nap 1
t0=$(now)
for s in $lost; do echo offline > "/sys/block/$s/device/state" || die "set $s offline"; done
for s in $lost; do idle_within "$s" 60 || die "$s still has commands in flight 60 s after going offline"; done
result "d_fault_drain_s=$(since "$t0")"
fcoe_set "${nics[1]}" 0 || die "take the second path down"
if wait $WRITER; then rc=0; else rc=$?; fi
sync
result "d_fault_write_rc=$rc d_fault_write_s=$(since "$t0") d_fault_active=$(paths_in A "$VDEV") d_fault_failed=$(paths_in F "$VDEV")"
result "d_fault_sha_ok=$([ "$(sha256sum < "$mp/b" | cut -d' ' -f1)" = "$B_SHA" ] && echo yes || echo no)"

# The array must see the lost path go before the unmount: while its remote port for this host's
# second initiator is Online, LIO keeps that session's commands, and removing the LUN waits for
# them (on a loaded machine, over 90 s: the Unmount's unexport timed out).
host_wwpns=($FC_HOST_WWPNS)
array_rport_state() { on_array "for r in /sys/class/fc_remote_ports/rport-*; do [ \"\$(cat \$r/port_name)\" != 0x$1 ] || cat \$r/port_state; done"; }
t0=$(now)
while [ "$(array_rport_state "${host_wwpns[1]}")" = Online ]; do
  [ "$(since "$t0" | cut -d. -f1)" -lt 150 ] || die "the array still sees ${host_wwpns[1]} Online 150 s after the path went down"
  nap 2
done
result "d_array_saw_loss_s=$(since "$t0") d_array_rport_after_loss=$(array_rport_state "${host_wwpns[1]}" | tr ' ' _)"

expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c1"}' >/dev/null
result "d_unmount_fc_devices=$(fc_scsi_devices) d_unmount_maps=$(dm_maps) d_unmount_array_luns=$(array_luns | tr ' ' ,) d_unmount_objects=$(array_objects)"

# Remount on the one path left: the data written before and during the fault.
mp=$(timed d_mount_one_path expect_ok VolumeDriver.Mount '{"Name":"v1","ID":"c2"}' | json Mountpoint) || die "daemon: mount v1 on one path"
VDEV=$(findmnt -n -o SOURCE "$mp")
a_ok=$([ "$(sha256sum < "$mp/a" | cut -d' ' -f1)" = "$DATA_SHA" ] && echo yes || echo no)
b_ok=$([ "$(sha256sum < "$mp/b" | cut -d' ' -f1)" = "$B_SHA" ] && echo yes || echo no)
result "d_one_path_paths=$(map_paths "$VDEV") d_remount_a_ok=$a_ok d_remount_b_ok=$b_ok"
expect_ok VolumeDriver.Unmount '{"Name":"v1","ID":"c2"}' >/dev/null

# The target ports gone (this host's last FCoE port down; SSH to the array goes on over IP): a
# Mount fails within Docker's budget, naming the ports, and leaves nothing attached or exported.
fcoe_set "${nics[0]}" 0 || die "take the first path down"
t0=$(date +%s%N)
out=$(call VolumeDriver.Mount '{"Name":"v1","ID":"c3"}')
result "d_ports_gone_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
save d-ports-gone-error "$(echo "$out" | json Err)"
result "d_ports_gone_fc_devices=$(fc_scsi_devices) d_ports_gone_maps=$(dm_maps) d_ports_gone_array_luns=$(array_luns | tr ' ' ,) d_ports_gone_objects=$(array_objects)"

expect_ok VolumeDriver.Remove '{"Name":"v1"}' >/dev/null
result "d_removed_objects=$(array_objects) d_removed_pool=$(on_array "ls /tmp/fc-pool | grep -vc '^[.]hosts\$'")"
result "d_secret_key_in_log=$(grep -c 'PRIVATE KEY' "$BALLAST_VM_LOGS/ballast.log")"
kill "$BALLAST_PID"; wait "$BALLAST_PID" 2>/dev/null

signal host-done
result "host_done_s=$(now)"
