# The host VM of the FC benchmark (bench/fc-bench.ts): FCoE initiator on both links (two fabrics,
# two paths), ballast's daemon with backends.lio transport fc managing the array VM over SSH.
# Times attach+mount (new and existing volume) and unmount+detach through the plugin socket, and
# sequential direct write/read throughput through ballast's multipath device against the same
# image attached by hand in the same round: a LIO storage object over the volume's file, a LUN
# on both target ports mapped in this host's ACLs (over SSH, untimed), then "C T L" written to
# each HBA's scan file and the dm-multipath map multipathd builds on its own.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
MB=${BENCH_WRITE_MB:-64}
SIZE=${BENCH_VOLUME_SIZE:-256M}
POOL=/tmp/fc-pool              # on the array VM
BYHAND_LUN=100                 # the baseline's LUN number (ballast numbers its LUNs from 0)
BYHAND_SERIAL=5e1f0bad-0000-4000-8000-00000000b0b0
BYHAND_MNT=/tmp/byhand

cleanup() { # also on failure: nothing of ours mounted or running when the VM powers off
  mountpoint -q "$BYHAND_MNT" && umount "$BYHAND_MNT"
  [ -n "${BALLAST_PID:-}" ] && kill "$BALLAST_PID" 2>/dev/null && wait "$BALLAST_PID" 2>/dev/null
  [ -n "${TAIL_PID:-}" ] && sleep 1 && kill "$TAIL_PID" 2>/dev/null
  signal bench-done
}
trap cleanup EXIT

# lib.sh's call with more room: on a loaded 2-core machine a Create over SSH has taken minutes.
call() { curl -sS --max-time 600 --unix-socket "$BALLAST_RUN/ballast.sock" -X POST -d "$2" "http://plugin/$1"; }

fcoe_prepare
for _ in $(seq 300); do [ -e "$SHARE/array-ready" ] && break; nap 1; done
[ -e "$SHARE/array-ready" ] || die "waited too long for array-ready"
for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
login=$(wait_rports $FC_MY_TARGETS 90) || die "the array's ports did not log in"
result "login_s=$login"


# One SSH command's round trip (a new connection each: OpenSSH's client), for reading the figures.
for i in 1 2; do timed "ssh_true_$i" on_array true || die "ssh to the array"; done

# The default lease (20 s, renewed every 2 s, self-fence after 12 s) and command bound (30 s) with
# more room: under TCG on a shared machine one SSH command has taken over 30 s, and a late renewal
# must not fail a Mount. Neither changes what a Mount or Unmount does.
# Debug logging: every command ballast runs is logged with its duration and request (the bench
# counts them per call).
{ base_config bench; cat <<YAML
log: {level: debug}
lease: {seconds: 180, renew_every: 2, fence_after: 150}
timeouts: {command_seconds: 120}
YAML
lio_array_yaml "$POOL"; cat <<YAML
profiles:
  default: {backend: lio}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
# The daemon's log, also in the share as it grows: readable from outside while the bench runs
# (BENCH_KEEP_LOGS=1 or a failed run keeps it).
tail -n +1 -F "$BALLAST_VM_LOGS/ballast.log" > "$SHARE/out/ballast.log" 2>/dev/null &
TAIL_PID=$!

. "$BALLAST_SRC/bench/vm/bench-lib.sh"
# throughput PREFIX DIR: a direct write then a direct read of DIR/seq
throughput() {
  local w rd
  w=$(mbps if=/dev/zero of="$2/seq" oflag=direct conv=fsync) || exit 1
  rd=$(mbps if="$2/seq" of=/dev/null iflag=direct) || exit 1
  result "${1}_write_mbps_$r=$w ${1}_read_mbps_$r=$rd"
  rm -f "$2/seq"
}
# slaves_of DEV: the paths under a dm device, found by its device number (/dev/mapper/X may be a
# node made by `dmsetup mknodes` rather than udev's symlink).
slaves_of() { local mm; mm=$(stat -L -c '%t %T' "$1") && ls "/sys/dev/block/$((16#${mm% *})):$((16#${mm#* }))/slaves" 2>/dev/null | wc -l; }
fc_disks() { local d; d=$(fc_scsi_devices); [ -z "$d" ] && echo 0 || echo "$d" | tr ',' '\n' | wc -l; }

# --- the by-hand baseline ------------------------------------------------------------------
# On the array (untimed): a storage object over the volume's image with the control string
# ballast uses, LUN $BYHAND_LUN on every port, mapped in every ACL there.
byhand_export() {
  on_array sh -s -- "$POOL/b0/disk.img" "$BYHAND_LUN" "$BYHAND_SERIAL" <<'EOF' || die "by hand: export on the array"
set -e
cd /sys/kernel/config/target
[ -f "$1" ] || { echo "no image $1" >&2; exit 3; }
d=core/fileio_0/bench-byhand
mkdir -p "$d"
echo "fd_dev_name=$1,fd_dev_size=$(stat -c %s "$1")" > "$d/control"
printf %s "$1" > "$d/udev_path"
echo "$3" > "$d/wwn/vpd_unit_serial"
echo 1 > "$d/enable"
for g in fc/*/tpgt_1; do
  mkdir "$g/lun/lun_$2" && ln -s "$PWD/$d" "$g/lun/lun_$2/bench"
  for a in "$g"/acls/*; do [ -d "$a" ] && mkdir "$a/lun_$2" && ln -s "$PWD/$g/lun/lun_$2" "$a/lun_$2/bench"; done
done
EOF
}
byhand_unexport() {
  on_array sh -s -- "$BYHAND_LUN" <<'EOF' || die "by hand: unexport on the array"
set -e
cd /sys/kernel/config/target
for g in fc/*/tpgt_1; do
  for a in "$g"/acls/*/lun_$1; do [ -d "$a" ] && rm -f "$a/bench" && rmdir "$a"; done
  [ ! -d "$g/lun/lun_$1" ] || { rm -f "$g/lun/lun_$1/bench"; rmdir "$g/lun/lun_$1"; }
done
rmdir core/fileio_0/bench-byhand
EOF
}
# On this host: "C T L" to each HBA's scan file, for each Online FCP target rport of the array.
byhand_scan() {
  local r w name c n=0
  for r in /sys/class/fc_remote_ports/rport-*; do
    [ -e "$r/port_name" ] || continue
    w=$(cat "$r/port_name"); w=${w#0x}
    case " $FC_MY_TARGETS " in *" $w "*) ;; *) continue ;; esac
    [ "$(cat "$r/port_state")" = Online ] && [ "$(cat "$r/scsi_target_id")" != -1 ] || continue
    name=${r##*/rport-}; c=${name#*:}; c=${c%%-*}          # rport-H:C-N
    echo "$c $(cat "$r/scsi_target_id") $BYHAND_LUN" > "/sys/class/scsi_host/host${name%%:*}/scan" || die "scan on host${name%%:*}"
    n=$((n + 1))
  done
  echo "$n"
}
# The map multipathd builds over the by-hand LUN's disks (the only map while ballast has nothing mounted).
byhand_map() { # (globs only: no process forked while polling)
  local d s
  for d in /sys/block/dm-*; do
    s=("$d"/slaves/*)
    [ -e "${s[0]}" ] && [ "${#s[@]}" = "$1" ] && { BYHAND_DM=${d##*/}; return 0; }
  done
  return 1
}
byhand_remove_disks() {
  local d b
  for d in /sys/class/scsi_device/*:"$BYHAND_LUN"; do
    [ -e "$d" ] || continue
    for b in "$d"/device/block/*; do [ -e "$b" ] && blockdev --flushbufs "/dev/${b##*/}"; done
    echo 1 > "$d/device/delete"
  done
  local left
  for _ in $(seq 200); do left=(/sys/class/scsi_device/*:"$BYHAND_LUN"); [ -e "${left[0]}" ] || return 0; nap 0.05; done
  die "by hand: the LUN's disks did not go"
}
byhand_round() {
  byhand_export
  local t0 n dm name
  t0=$(date +%s%N)
  n=$(byhand_scan) || exit 1
  [ "$n" -gt 0 ] || die "by hand: no path to scan"
  BYHAND_DM=
  for _ in $(seq 1200); do byhand_map "$n" && break; nap 0.05; done
  dm=$BYHAND_DM
  [ -n "$dm" ] || die "by hand: multipathd built no $n-path map ($(multipath -ll 2>&1 | tr '\n' ' '))"
  udevadm settle
  name=$(cat "/sys/block/$dm/dm/name")
  mkdir -p "$BYHAND_MNT" && mount "/dev/mapper/$name" "$BYHAND_MNT" || die "by hand: mount /dev/mapper/$name"
  result "byhand_attach_mount_${r}_ms=$(( ($(date +%s%N) - t0) / 1000000 )) byhand_paths_$r=$n"
  throughput byhand "$BYHAND_MNT"
  umount "$BYHAND_MNT" || die "by hand: umount"
  for _ in $(seq 20); do multipath -f "$name" >/dev/null 2>&1 && break; nap 0.5; done
  [ ! -e "/dev/mapper/$name" ] || die "by hand: multipath -f $name failed"
  byhand_remove_disks
  byhand_unexport
}

# --- the rounds -----------------------------------------------------------------------------
expect_ok VolumeDriver.Create "{\"Name\":\"b0\",\"Opts\":{\"size\":\"$SIZE\"}}" >/dev/null
# b0 formatted once, untimed: every later mount of it is a mount of an existing volume.
expect_ok VolumeDriver.Mount '{"Name":"b0","ID":"w"}' >/dev/null
expect_ok VolumeDriver.Unmount '{"Name":"b0","ID":"w"}' >/dev/null
ballast_io_round() {
  local mp dev
  mp=$(timed_call "existing_attach_mount_$r" VolumeDriver.Mount '{"Name":"b0","ID":"y"}' | json Mountpoint)
  [ -n "$mp" ] || die "mount b0"
  dev=$(findmnt -n -o SOURCE "$mp")
  result "ballast_device_$r=$dev ballast_paths_$r=$(slaves_of "$dev")"
  throughput ballast "$mp"
  timed_call "detach_existing_$r" VolumeDriver.Unmount '{"Name":"b0","ID":"y"}' >/dev/null
}
for r in $(seq "$ROUNDS"); do
  expect_ok VolumeDriver.Create "{\"Name\":\"n$r\",\"Opts\":{\"size\":\"$SIZE\"}}" >/dev/null
  timed_call "new_attach_mount_$r" VolumeDriver.Mount "{\"Name\":\"n$r\",\"ID\":\"x\"}" >/dev/null
  timed_call "detach_$r" VolumeDriver.Unmount "{\"Name\":\"n$r\",\"ID\":\"x\"}" >/dev/null
  expect_ok VolumeDriver.Remove "{\"Name\":\"n$r\"}" >/dev/null
  # The I/O through ballast and by hand, in alternating order (neither always goes first).
  if [ $((r % 2)) = 1 ]; then ballast_io_round; byhand_round; else byhand_round; ballast_io_round; fi
done
expect_ok VolumeDriver.Remove '{"Name":"b0"}' >/dev/null
result "left_disks=$(fc_disks) left_maps=$(dm_maps) left_rports=$(wait_rports $FC_MY_TARGETS 1 2>/dev/null >/dev/null && echo online || echo gone)"
exit 0
