# Host 1 of nfs-takeover.test.ts: the holder. Part A: its daemon is killed (-9) while it holds
# volume k9; its kernel and network stay up (daemon_case also takes `stop`, SIGSTOP, which
# nfs-random-faults draws). Part B: it holds v and this whole VM is cut off from the NFS server,
# then healed. The host test times the steps and takes the image's sha256 on the server between
# them (signal files in $SHARE).
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/nfs-takeover-lib.sh"
CUT=no
trap '[ "$CUT" = yes ] && nfs_heal' EXIT # a failed run must not leave poweroff hanging on a dead mount

nfs_mount /mnt/nfs
mkdir -p "$ROOT"
result "vm1_recover_lost_locks=$(cat /sys/module/nfs/parameters/recover_lost_locks)"
save vm1-nfs-mount "$(grep ' /mnt/nfs ' /proc/mounts)"
write_config 90
start_daemon
signal vm1-ready

# ---------- Part A: the daemon dies or hangs; the watchdog fences; the image lock stays held.
daemon_case() { # VOLUME kill|stop
  local v=$1 how=$2 mp wpid t0 w
  expect_ok VolumeDriver.Create "{\"Name\":\"$v\",\"Opts\":{\"size\":\"64M\"}}" >/dev/null
  w=$(watchdogs_started)
  mp=$(expect_ok VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"c-$v\"}" | json Mountpoint) || die "mount $v"
  # The fence under test is the watchdog's: kill the daemon only once the watchdog runs.
  result "${v}_vm1_watchdog_start_s=$(wait_watchdog "$w")"
  result "${v}_vm1_generation=$(get_volume "$v" | jget Volume.Status.lease.generation)"
  result "${v}_vm1_flocks_mounted=$(flocks) ${v}_vm1_loops_mounted=$(loops)"
  line_writer "$mp" vm1 "/tmp/$v" 1 &
  wpid=$!
  sleep 3
  signal "$v-writing"
  t0=$(now)
  if [ "$how" = kill ]; then kill -KILL "$BALLAST_PID"; wait "$BALLAST_PID" 2>/dev/null; else kill -STOP "$BALLAST_PID"; fi
  signal "$v-daemon-down"
  # The watchdog (its own process) must fence within fence_after (6 s): the writer's next write fails.
  for _ in $(seq 150); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$wpid" 2>/dev/null; then
    result "${v}_vm1_fenced_after_s=never"
    touch "/tmp/$v.stop"
    kill "$wpid" 2>/dev/null
  else
    result "${v}_vm1_fenced_after_s=$(since "$t0")"
  fi
  wait "$wpid" 2>/dev/null
  result "${v}_vm1_acked=$(cat "/tmp/$v.acked")"
  cp "/tmp/$v.acked" "$SHARE/$v.acked"
  save "$v-vm1-writer-error" "$(cat "/tmp/$v.err")"
  save "$v-vm1-watchdog" "$(cat "$BALLAST_RUN/state/fenced.json" 2>&1)"
  # The loop writes through this kernel's NFS page cache, and what ext4 wrote before its shutdown
  # may still be dirty twice over: in the loop device's own buffers (journalled metadata checkpointed
  # to its home block; seen: one inode-table block landing ~30 s later) and in the image's NFS
  # pages. Both are the holder's own writes, flushed at the latest when it detaches, and host 2
  # cannot attach before that (the lock). Flush them now, so that the image's sha256 the host takes
  # next changes only if host 2 touches the image. The writer sees EIO as soon as the shutdown
  # flag is set, but the ioctl then still aborts the journal: wait for the watchdog to record the
  # fence (after its shutdown command) first.
  for _ in $(seq 50); do grep -q "\"$v\"" "$BALLAST_RUN/state/fenced.json" 2>/dev/null && break; sleep 0.2; done
  for _ in 1 2; do
    timeout 60 sync || result "${v}_vm1_sync_failed=$?" # block devices (the loop's buffers) included
    timeout 60 sync -f "$ROOT" || result "${v}_vm1_sync_failed=$?" # then the NFS pages they became
    sleep 1
  done
  signal "$v-fenced"
  # The host test lets host 2 try (and fail: the lock is held), then tells us to come back.
  wait_for "$v-restart" 240
  if [ "$how" = kill ]; then start_daemon; else kill -CONT "$BALLAST_PID"; sleep 2; fi
  save "$v-vm1-get-after-return" "$(get_volume "$v")"
  local out; out=$(call VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"c-$v\"}")
  save "$v-vm1-unmount" "$out"
  result "${v}_vm1_unmount_ok=$([ -z "$(echo "$out" | json Err)" ] && echo yes || echo no)"
  result "${v}_vm1_loops_after_unmount=$(loops) ${v}_vm1_mounts_after_unmount=$(ballast_mounts) ${v}_vm1_flocks_after_unmount=$(flocks)"
  signal "$v-released"
  wait_for "$v-done" 240
}
daemon_case k9 kill

# ---------- Part B: the whole host is cut off from the NFS server while it writes to v.
expect_ok VolumeDriver.Create '{"Name":"v","Opts":{"size":"64M"}}' >/dev/null
w=$(watchdogs_started)
mp=$(expect_ok VolumeDriver.Mount '{"Name":"v","ID":"c-v"}' | json Mountpoint) || die "mount v"
result "v_vm1_watchdog_start_s=$(wait_watchdog "$w")"
wait_for vm2-ready-partition 240 # host 2 restarted with a longer mount_wait meanwhile
result "v_vm1_generation=$(get_volume v | jget Volume.Status.lease.generation) v_vm1_flocks_mounted=$(flocks)"
line_writer "$mp" vm1 /tmp/p 20 &
lpid=$!
file_writer "$mp" /tmp/pf 20 &
fpid=$!
( while :; do cp /tmp/p.acked "$SHARE/p.acked.live" 2>/dev/null; sleep 0.5; done ) &
cpid=$!
signal p-writing
fencing_before=$(grep -c 'FENCING' "$BALLAST_VM_LOGS/ballast.log" || true)
sleep 8
nfs_cut
CUT=yes
t_cut=$(now)
signal p-cut
# Any acknowledgement still to come was answered by the server before the cut: read it 1 s later.
sleep 1
cp /tmp/p.acked "$SHARE/p.acked-at-cut"
result "p_vm1_acked_at_cut=$(cat /tmp/p.acked) p_vm1_files_at_cut=$(cat /tmp/pf.count)"
# Is the daemon still answering while cut off (fence_after has passed by then)? Bounded probes.
sleep 9
t0=$(now)
out=$(curl -sS --max-time 10 --unix-socket "$BALLAST_RUN/ballast.sock" -X POST -d '{"Name":"v"}' http://plugin/VolumeDriver.Get 2>&1)
result "p_vm1_get_during_cut_rc=$? p_vm1_get_during_cut_s=$(since "$t0")"
save p-vm1-get-during-cut "$out"
t0=$(now)
out=$(timeout 10 node "$BALLAST_CLI" --config "$BALLAST_RUN/config.yml" volume ls 2>&1)
result "p_vm1_ls_during_cut_rc=$? p_vm1_ls_during_cut_s=$(since "$t0")"
save p-vm1-ls-during-cut "$out"
save p-vm1-errors-during-cut "$(cat /tmp/p.err /tmp/pf.err)"
result "p_vm1_fencing_logged_during_cut=$(( $(grep -c 'FENCING' "$BALLAST_VM_LOGS/ballast.log" || true) - fencing_before ))"
save p-vm1-watchdog-during-cut "$(cat "$BALLAST_RUN/state/fenced.json" 2>&1)"

wait_for p-heal 300
nfs_heal
CUT=no
t_heal=$(now)
result "p_vm1_cut_s=$(awk "BEGIN { printf \"%.1f\", $t_heal - $t_cut }")"
sleep 30 # what VM1 queued reaches the server now, or is refused
touch /tmp/p.stop /tmp/pf.stop
for _ in $(seq 100); do kill -0 "$lpid" 2>/dev/null || kill -0 "$fpid" 2>/dev/null || break; sleep 0.2; done
result "p_vm1_writers_still_blocked=$( (kill -0 "$lpid" 2>/dev/null && echo lines); (kill -0 "$fpid" 2>/dev/null && echo files) | tr '\n' , )"
kill "$cpid" 2>/dev/null
acked=$(cat /tmp/p.acked)
cp /tmp/p.acked "$SHARE/p.acked-final"
cat /tmp/p.err /tmp/pf.err > /tmp/p.all.err
result "p_vm1_acked_final=$acked p_vm1_files_final=$(cat /tmp/pf.count)"
result "p_vm1_write_errors=$(grep -c . /tmp/p.all.err) p_vm1_eio=$(grep -c 'Input/output error' /tmp/p.all.err) p_vm1_erofs=$(grep -c 'Read-only file system' /tmp/p.all.err)"
# When the errors came, relative to the cut and to the heal (this VM's clock).
first=$(sort -n /tmp/p.all.err | head -1 | cut -d' ' -f1)
[ -n "$first" ] && result "p_vm1_first_error_after_cut_s=$(awk "BEGIN { printf \"%.1f\", $first - $t_cut }") p_vm1_first_error_after_heal_s=$(awk "BEGIN { printf \"%.1f\", $first - $t_heal }")"
save p-vm1-write-errors "$(cat /tmp/p.all.err)"
save p-vm1-dmesg "$(dmesg | grep -Ei 'loop|ext4|jbd2|nfs|I/O error' | tail -n 40)"
# The daemon, back in touch, reports v fenced (bounded).
fenced=
for _ in $(seq 30); do
  fenced=$(curl -sS --max-time 10 --unix-socket "$BALLAST_RUN/ballast.sock" -X POST -d '{"Name":"v"}' http://plugin/VolumeDriver.Get 2>/dev/null | jget Volume.Status.fenced)
  [ -n "$fenced" ] && break
  sleep 1
done
save p-vm1-fenced "$fenced"
save p-vm1-ls-after-heal "$(timeout 30 node "$BALLAST_CLI" --config "$BALLAST_RUN/config.yml" volume ls 2>&1)"
result "p_vm1_fenced=$([ -n "$fenced" ] && echo yes || echo no)"
signal p-observed

# Docker would unmount when the container stops: v leaves this host with nothing attached.
wait_for p-unmount 240
for pid in $lpid $fpid; do kill -KILL "$pid" 2>/dev/null; done
for _ in $(seq 50); do kill -0 "$lpid" 2>/dev/null || kill -0 "$fpid" 2>/dev/null || break; sleep 0.2; done
out=$(timed p_vm1_unmount call VolumeDriver.Unmount '{"Name":"v","ID":"c-v"}')
save p-vm1-unmount "$out"
result "p_vm1_unmount_ok=$([ -z "$(echo "$out" | json Err)" ] && echo yes || echo no)"
result "p_vm1_loops_end=$(loops) p_vm1_mounts_end=$(ballast_mounts) p_vm1_flocks_end=$(flocks)"
save vm1-losetup-end "$(losetup -a)"
stop_daemon
signal vm1-done
exit 0
