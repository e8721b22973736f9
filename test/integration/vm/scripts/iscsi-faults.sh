# Faults in a real kernel: a wrong CHAP secret, a hung iscsid, an unreachable array, a missing LUN. Each Mount
# must fail with a clear Err within its bound and leave no node record, session, disk or map.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
start_tgtd
# The array already has an account "ballast" with another secret than the one ballast is given.
tgtadm --lld iscsi --mode account --op new --user ballast --password the-arrays-secret
{ base_config vm1; cat <<YAML
timeouts: {command_seconds: 6}
backends:
  iscsi: {portals: ["127.0.0.1:3260", "127.0.0.2:3260"], pool: $BALLAST_RUN/pool, chap: {username: ballast, password: not-the-arrays-secret}}
profiles:
  default: {backend: iscsi}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
left() { echo "$(sessions),$(ls /etc/iscsi/nodes 2>/dev/null | wc -l),$(scsi_disks),$(dm_maps)"; }
# mount_err LABEL VOLUME: the Err of a Mount, spaces as "_"; its duration as LABEL_ms
mount_err() {
  local t0 out; t0=$(date +%s%N)
  out=$(call VolumeDriver.Mount "{\"Name\":\"$2\",\"ID\":\"x\"}" | json Err | tr ' ' _)
  result "$1_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
  echo "$out"
}

expect_ok VolumeDriver.Create '{"Name":"chap","Opts":{"size":"32M"}}' >/dev/null
result "chap_err=$(mount_err chap chap)"
result "chap_left=$(left)"

# iscsid hangs (stopped): every iscsiadm call that needs it hangs until its timeout.
expect_ok VolumeDriver.Create '{"Name":"hung","Opts":{"size":"32M"}}' >/dev/null
tgtadm --lld iscsi --mode account --op delete --user ballast   # CHAP works again from here on
iscsid_pid=$(cat /run/iscsid.pid 2>/dev/null || pidof iscsid)
kill -STOP $iscsid_pid
result "hung_err=$(mount_err hung hung)"
kill -CONT $iscsid_pid
sleep 2
result "hung_left=$(left)"

# The array is gone (tgtd stopped): export fails before anything is attached.
kill -STOP $TGTD_PID
result "down_err=$(mount_err down hung)"
kill -CONT $TGTD_PID
result "down_left=$(left)"

# The LUN is missing: the volume's target exists on the array but serves nothing.
expect_ok VolumeDriver.Create '{"Name":"nolun","Opts":{"size":"32M"}}' >/dev/null
tgtadm --lld iscsi --mode target --op new --tid 99 --targetname iqn.2026-11.dev.ballast:nolun
result "nolun_err=$(mount_err nolun nolun)"
result "nolun_left=$(left)"
tgtadm --lld iscsi --mode target --op delete --tid 99

# And with everything back, the same volume mounts.
expect_ok VolumeDriver.Mount '{"Name":"hung","ID":"x"}' >/dev/null && result "recovered=yes"
expect_ok VolumeDriver.Unmount '{"Name":"hung","ID":"x"}' >/dev/null
result "end_left=$(left)"
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
exit 0
