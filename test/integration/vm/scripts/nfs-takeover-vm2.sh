# Host 2 of nfs-takeover.test.ts: the one that takes over. Part A (mount_wait 20): host 1's daemon
# died or hangs but its kernel still has the image attached, so Mount must fail naming the NFS
# lock; once host 1 unmounted, Mount succeeds with every acknowledged line. Part B (mount_wait 90):
# host 1 is cut off from the server; Mount must wait for the lease and for the server to drop
# host 1's lock, then this host writes a line and a marker the stale host must not undo.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-takeover-lib.sh"

nfs_mount /mnt/nfs
mkdir -p "$ROOT"
write_config 20
start_daemon
signal vm2-ready

# ---------- Part A
daemon_case() { # VOLUME
  local v=$1 out err t0 mp
  wait_for "$v-daemon-down" 420 # host 1's daemon was just killed or stopped: its lease runs out in 12 s
  t0=$(now)
  out=$(call VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"d-$v\"}")
  result "${v}_vm2_first_mount_s=$(since "$t0")"
  save "$v-vm2-first-mount" "$out"
  err=$(echo "$out" | json Err)
  if [ -z "$err" ]; then
    # Took it while host 1's kernel still had it attached: record what it saw, and give it back.
    result "${v}_vm2_first_mount=succeeded"
    mp=$(echo "$out" | json Mountpoint)
    result "${v}_vm2_first_mount_lines=$(tag_lines "$mp/log" vm1)"
    call VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"d-$v\"}" >/dev/null
  else
    result "${v}_vm2_first_mount=failed"
  fi
  save "$v-vm2-get-after-refusal" "$(get_volume "$v")"
  result "${v}_vm2_loops_after_refusal=$(loops) ${v}_vm2_mounts_after_refusal=$(ballast_mounts)"
  signal "$v-refused"
  wait_for "$v-released" 240 # host 1's daemon is back and unmounted v (its kernel let the lock go)
  t0=$(now)
  out=$(call VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"d-$v\"}")
  result "${v}_vm2_mount_s=$(since "$t0")"
  save "$v-vm2-mount" "$out"
  err=$(echo "$out" | json Err)
  if [ -z "$err" ]; then
    mp=$(echo "$out" | json Mountpoint)
    acked=$(cat "$SHARE/$v.acked")
    result "${v}_vm2_mounted=yes ${v}_vm2_lines_ok=$(lines_ok "$mp/log" vm1 "$acked") ${v}_vm2_lines=$(tag_lines "$mp/log" vm1)"
    result "${v}_vm2_generation=$(get_volume "$v" | jget Volume.Status.lease.generation)"
    out=$(call VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"d-$v\"}")
    result "${v}_vm2_unmount_ok=$([ -z "$(echo "$out" | json Err)" ] && echo yes || echo no)"
  else
    result "${v}_vm2_mounted=no"
  fi
  result "${v}_vm2_loops_end=$(loops) ${v}_vm2_mounts_end=$(ballast_mounts)"
  signal "$v-done"
}
daemon_case k9

# ---------- Part B: a longer mount_wait, so Mount outlasts the NFS server's lease (15 s) too.
stop_daemon
write_config 90
start_daemon
signal vm2-ready-partition
wait_for p-cut 300
t0=$(now)
out=$(call VolumeDriver.Mount '{"Name":"v","ID":"d-v"}')
signal p-mounted
result "p_vm2_mount_s=$(since "$t0")"
save p-vm2-mount "$out"
err=$(echo "$out" | json Err)
if [ -z "$err" ]; then
  mp=$(echo "$out" | json Mountpoint)
  wait_for p.acked-at-cut 60
  acked=$(cat "$SHARE/p.acked-at-cut")
  result "p_vm2_mounted=yes p_vm2_lines_ok=$(lines_ok "$mp/log" vm1 "$acked") p_vm2_lines=$(tag_lines "$mp/log" vm1)"
  result "p_vm2_generation=$(get_volume v | jget Volume.Status.lease.generation)"
  cp "$mp/log" "$SHARE/out/p-log-at-takeover"
  echo "VM2 TOOK OVER" >> "$mp/log" && sync "$mp/log" || die "cannot append to the log"
  head -c 1048576 /dev/urandom > "$mp/marker" && sync "$mp/marker" || die "cannot write the marker"
  sha256sum < "$mp/marker" | cut -d' ' -f1 > "$SHARE/out/p-marker-sha"
  out=$(call VolumeDriver.Unmount '{"Name":"v","ID":"d-v"}')
  save p-vm2-unmount "$out"
  result "p_vm2_unmount_ok=$([ -z "$(echo "$out" | json Err)" ] && echo yes || echo no)"
else
  result "p_vm2_mounted=no"
fi
result "p_vm2_loops_end=$(loops) p_vm2_mounts_end=$(ballast_mounts)"
stop_daemon
signal p-vm2-done
exit 0
