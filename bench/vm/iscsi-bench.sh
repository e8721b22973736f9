# The iSCSI benchmark, inside one VM: attach+mount and detach through ballast, and sequential
# write and read throughput through ballast's multipath device against the same LUN attached by hand.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
MB=${BENCH_WRITE_MB:-96}
start_tgtd
{ base_config bench; cat <<YAML
backends:
  iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], pool: $BALLAST_RUN/pool}
profiles:
  default: {backend: iscsi}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast

# write_mbps FILE: MB/s of one sequential direct write of $MB MiB
write_mbps() {
  local t0 t1; t0=$(date +%s%N)
  dd if=/dev/zero of="$1" bs=1M count="$MB" oflag=direct conv=fsync 2>/dev/null || die "dd $1"
  t1=$(date +%s%N)
  awk "BEGIN { printf \"%.1f\", $MB / (($t1 - $t0) / 1e9) }"
}

# read_mbps FILE: MB/s of one sequential direct read of it (past the page cache)
read_mbps() {
  local t0 t1; t0=$(date +%s%N)
  dd if="$1" of=/dev/null bs=1M iflag=direct 2>/dev/null || die "dd read $1"
  t1=$(date +%s%N)
  awk "BEGIN { printf \"%.1f\", $MB / (($t1 - $t0) / 1e9) }"
}

expect_ok VolumeDriver.Create '{"Name":"b0","Opts":{"size":"256M"}}' >/dev/null
for r in $(seq "$ROUNDS"); do
  expect_ok VolumeDriver.Create "{\"Name\":\"n$r\",\"Opts\":{\"size\":\"256M\"}}" >/dev/null
  timed "new_attach_mount_$r" expect_ok VolumeDriver.Mount "{\"Name\":\"n$r\",\"ID\":\"x\"}" >/dev/null
  timed "detach_$r" expect_ok VolumeDriver.Unmount "{\"Name\":\"n$r\",\"ID\":\"x\"}" >/dev/null
  mp=$(expect_ok VolumeDriver.Mount '{"Name":"b0","ID":"x"}' | json Mountpoint)
  result "ballast_write_mbps_$r=$(write_mbps "$mp/seq")"
  result "ballast_read_mbps_$r=$(read_mbps "$mp/seq")"
  rm -f "$mp/seq"
  expect_ok VolumeDriver.Unmount '{"Name":"b0","ID":"x"}' >/dev/null
  t0=$(date +%s%N)
  expect_ok VolumeDriver.Mount '{"Name":"b0","ID":"y"}' >/dev/null
  result "existing_attach_mount_${r}_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
  expect_ok VolumeDriver.Unmount '{"Name":"b0","ID":"y"}' >/dev/null

  # The same LUN by hand: ACL, two logins, a full scan, multipathd's own map, mount, write.
  iqn=iqn.2026-11.dev.ballast:b0
  tid=$(tgtadm --lld iscsi --mode target --op show | sed -n "s/^Target \([0-9]*\): $iqn\$/\1/p")
  tgtadm --lld iscsi --mode target --op bind --tid "$tid" --initiator-name "$BALLAST_VM_IQN"
  for p in 127.0.0.1:3260 127.0.0.2:3260; do
    iscsiadm -m node -T $iqn -p $p -o new >/dev/null && iscsiadm -m node -T $iqn -p $p --login >/dev/null || die "login $p"
  done
  for _ in $(seq 100); do dm=$(ls /sys/block | grep '^dm-' | head -1); [ -n "$dm" ] && [ "$(ls /sys/block/$dm/slaves 2>/dev/null | wc -l)" = 2 ] && break; sleep 0.2; done
  udevadm settle
  name=$(cat /sys/block/$dm/dm/name)
  mkdir -p /tmp/byhand && mount "/dev/mapper/$name" /tmp/byhand || die "mount by hand"
  result "byhand_write_mbps_$r=$(write_mbps /tmp/byhand/seq)"
  result "byhand_read_mbps_$r=$(read_mbps /tmp/byhand/seq)"
  rm -f /tmp/byhand/seq
  umount /tmp/byhand
  multipath -f "$name" >/dev/null
  for s in $(ls /sys/block | grep '^sd'); do echo 1 > /sys/block/$s/device/delete; done
  for p in 127.0.0.1:3260 127.0.0.2:3260; do iscsiadm -m node -T $iqn -p $p --logout >/dev/null; iscsiadm -m node -T $iqn -p $p -o delete; done
  tgtadm --lld iscsi --mode target --op unbind --tid "$tid" --initiator-name "$BALLAST_VM_IQN"
done
result "left_sessions=$(sessions) left_disks=$(scsi_disks) left_maps=$(dm_maps)"
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
exit 0
