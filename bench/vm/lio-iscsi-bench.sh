# The LIO-over-iSCSI benchmark, inside one VM that is both the array and the host: one ballast
# daemon with two backends side by side, tgt (backends.iscsi: tgtd on 127.0.0.1:3260 and
# 127.0.0.2:3260) and LIO (backends.lio transport iscsi, local array: the kernel's target on
# 127.0.0.1:3261 and 127.0.0.2:3261). Each round times, for both (the order alternates), attach +
# mount of a new and of an existing volume, unmount + detach, and sequential direct write and
# read throughput through ballast's multipath device.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
MB=${BENCH_WRITE_MB:-64}
SIZE=${BENCH_VOLUME_SIZE:-256M}
T=/sys/kernel/config/target

start_tgtd
modprobe -a configfs target_core_mod target_core_file iscsi_target_mod || die "LIO modules"
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config || die "configfs"
{ base_config bench; cat <<YAML
backends:
  iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], pool: $BALLAST_RUN/pool-tgt}
  lio:
    pool: $BALLAST_RUN/pool-lio
    transport: iscsi
    iscsi: {portals: ["127.0.0.1:3261", "127.0.0.2:3261"]}
log: {level: debug}
profiles:
  default: {backend: iscsi}
  tgt: {backend: iscsi}
  lio: {backend: lio}
YAML
} > "$BALLAST_RUN/config.yml"
# On any exit: ballast stopped, its log (debug: every command with its duration and request) to the bench.
cleanup() {
  [ -n "${BALLAST_PID:-}" ] && kill "$BALLAST_PID" 2>/dev/null && wait "$BALLAST_PID" 2>/dev/null
  [ -n "${TGTD_PID:-}" ] && kill "$TGTD_PID" 2>/dev/null
  [ -n "${BENCH_SHARE:-}" ] && cp "$BALLAST_VM_LOGS/ballast.log" "$BENCH_SHARE/ballast.log" 2>/dev/null
  return 0
}
trap cleanup EXIT
start_ballast

. "$BALLAST_SRC/bench/vm/bench-lib.sh"
# slaves_of DEV: the paths under a dm device, found by its device number (/dev/mapper/X may be a
# node made by `dmsetup mknodes` rather than udev's symlink).
slaves_of() { local mm; mm=$(stat -L -c '%t %T' "$1") && ls "/sys/dev/block/$((16#${mm% *})):$((16#${mm#* }))/slaves" 2>/dev/null | wc -l; }

# one KIND (tgt | lio): a new volume mounted and unmounted, then the existing one with the I/O.
one() {
  local k=$1 mp dev w rd
  expect_ok VolumeDriver.Create "{\"Name\":\"${k}n$r\",\"Opts\":{\"size\":\"$SIZE\",\"profile\":\"$k\"}}" >/dev/null
  timed_call "${k}_new_attach_mount_$r" VolumeDriver.Mount "{\"Name\":\"${k}n$r\",\"ID\":\"x\"}" >/dev/null
  timed_call "${k}_detach_$r" VolumeDriver.Unmount "{\"Name\":\"${k}n$r\",\"ID\":\"x\"}" >/dev/null
  expect_ok VolumeDriver.Remove "{\"Name\":\"${k}n$r\"}" >/dev/null
  mp=$(timed_call "${k}_existing_attach_mount_$r" VolumeDriver.Mount "{\"Name\":\"${k}b0\",\"ID\":\"y\"}" | json Mountpoint)
  [ -n "$mp" ] || die "mount ${k}b0"
  dev=$(findmnt -n -o SOURCE "$mp")
  w=$(mbps if=/dev/zero of="$mp/seq" oflag=direct conv=fsync) || exit 1
  rd=$(mbps if="$mp/seq" of=/dev/null iflag=direct) || exit 1
  result "${k}_device_$r=$dev ${k}_paths_$r=$(slaves_of "$dev") ${k}_write_mbps_$r=$w ${k}_read_mbps_$r=$rd"
  rm -f "$mp/seq"
  timed_call "${k}_detach_existing_$r" VolumeDriver.Unmount "{\"Name\":\"${k}b0\",\"ID\":\"y\"}" >/dev/null
}

for k in tgt lio; do # the volumes for the I/O, formatted once, untimed
  expect_ok VolumeDriver.Create "{\"Name\":\"${k}b0\",\"Opts\":{\"size\":\"$SIZE\",\"profile\":\"$k\"}}" >/dev/null
  expect_ok VolumeDriver.Mount "{\"Name\":\"${k}b0\",\"ID\":\"w\"}" >/dev/null
  expect_ok VolumeDriver.Unmount "{\"Name\":\"${k}b0\",\"ID\":\"w\"}" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then one tgt; one lio; else one lio; one tgt; fi
done
for k in tgt lio; do expect_ok VolumeDriver.Remove "{\"Name\":\"${k}b0\"}" >/dev/null; done
result "left_sessions=$(sessions) left_disks=$(scsi_disks) left_maps=$(dm_maps)"
result "left_lio_targets=$(ls $T/iscsi 2>/dev/null | grep -c '^iqn' || true) left_lio_objects=$(find $T/core -mindepth 2 -maxdepth 2 -type d \( -path '*/fileio_*/*' -o -path '*/iblock_*/*' \) | wc -l) left_tgt_targets=$(tgtadm --lld iscsi --mode target --op show | grep -c '^Target' || true)"
exit 0
