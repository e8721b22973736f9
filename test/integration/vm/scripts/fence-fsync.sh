# Does the fence keep every fsync-acknowledged write? A writer appends fsynced lines to ext4 on a
# slow device (dm-delay: every write waits DELAY_MS), the filesystem is shut down mid-stream, and
# a second loop device on the same image (as a host taking over would) checks and mounts it and
# counts the lines. Per way of fencing: trials, and how many lost an acknowledged line.
#   ballast     ballast's own fence: `ballast fence-watchdog` finds the volume's daemon silent
#   nologflush  the bare shutdown ballast's fence used before (xfs_io shutdown); by hand only
#               (FENCE_FSYNC_NOLOGFLUSH_TRIALS=n): it loses in a few trials, too few for every CI run
#   logflush    xfs_io shutdown -f, which loses most often: shows the check can see a loss (its
#               trials stop at the first loss)
#   unreachable ballast's fence on a multipath map (queue_if_no_path) whose one path failed just
#               before: the freeze cannot finish; the path comes back after the fence, as an FC
#               host cut off from the array and healed does (FC random faults lost a line so)
# A trial that lost a line prints what fsck said, the log's end, the watchdog's log and dmesg.
set -euo pipefail
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
modprobe -a loop dm_delay dm_multipath dm_round_robin || die "no dm_delay or dm_multipath module in this kernel"
# The VM lab's multipathd would remove the hand-made multipath map (its one path is a loop device,
# which it ignores): stop it. No other map is used here.
multipathd shutdown >/dev/null || die "cannot stop multipathd"
DELAY_MS=${FENCE_FSYNC_DELAY_MS:-100}
W=$BALLAST_RUN/fence-fsync STATE=$BALLAST_RUN/state
mkdir -p "$W/a" "$W/b" "$STATE"
{ base_config vm1; cat <<YAML
backends: {loop: {root: $BALLAST_RUN/loop}}
lease: {seconds: 2, renew_every: 0.5, fence_after: 1, mount_wait: 20}
YAML
} > "$BALLAST_RUN/config.yml"
# The writer also leaves $W/go just before its tenth fsync: the baseline shuts down then, while
# that fsync waits on its data (the loss needs exactly that); ballast's watchdog picks its own time.
WRITER='const fs=require("fs");const [file,ack,go]=process.argv.slice(1);let seq=0;const fd=fs.openSync(file,"a");
for(;;){try{fs.writeSync(fd,"a "+(seq+1)+"\n");if(seq===9)fs.writeFileSync(go,"");fs.fsyncSync(fd);seq+=1;fs.writeFileSync(ack,String(seq));}catch(e){process.exit(0);}}'
SLOW=/dev/mapper/fence-fsync-slow MAP=fence-fsync-mp

fence_xfs_io() {
  for _ in $(seq 1000); do [ -e "$W/go" ] && break; nap 0.01; done
  nap 0.03
  timeout 30 xfs_io -x -c "$1" "$W/a" || true
}
fence_ballast() { # the volume as the daemon records it, and no heartbeat: the watchdog fences after fence_after
  rm -f "$STATE/fenced.json" "$STATE/heartbeat.json"
  printf '{"v":1,"volumes":{"v":{"device":"%s","mountpoint":"%s","export":{"transport":"loop"},"refs":{"t":1},"staleIds":[],"generation":1}}}' "$SLOW" "$W/a" > "$STATE/mounts.json"
  nap "0.$(( RANDOM % 10 ))"
  ballast fence-watchdog >"$W/watchdog.log" 2>&1 & local watchdog=$!
  for _ in $(seq 300); do grep -qs '"v"' "$STATE/fenced.json" && break; nap 0.1; done
  grep -qs '"v"' "$STATE/fenced.json" || die "the watchdog fenced nothing in 30 s"
  kill "$watchdog"; wait "$watchdog" || true
  rm -f "$STATE/mounts.json"
  if grep -q 'without it' "$W/watchdog.log"; then echo "without the freeze: $(grep -o '"message":"fence: [^"]*"' "$W/watchdog.log" | head -1)"; fi
}

fence_unreachable() { # the map's only path fails while the writer runs (its I/O queues), then ballast's fence
  for _ in $(seq 1000); do [ -e "$W/go" ] && break; nap 0.01; done
  nap "0.$(( RANDOM % 10 ))"
  dmsetup message "$MAP" 0 fail_path "$PATH_DOWN"
  local said ended=no; said=$(fence_ballast)
  # The fence fails the queued I/O: the writer's fsync gets EIO now, not once the path is back.
  # ($writer is trial's; an exited writer stays a zombie until trial waits for it.)
  for _ in $(seq 50); do [ "$(cut -d' ' -f3 "/proc/$writer/stat" 2>/dev/null || echo Z)" = Z ] && { ended=yes; break; }; nap 0.1; done
  dmsetup message "$MAP" 0 reinstate_path "$PATH_DOWN" # the storage answers again
  echo "$said; the writer ended before the path returned: $ended"
}

trial() { # $1: fence_xfs_io ARGS | fence_ballast | fence_unreachable; prints acknowledged and found
  truncate -s 0 "$W/img" && truncate -s 64M "$W/img"
  local la lb writer under; la=$(losetup --find --show "$W/img") under=$la
  if [ "$1" = fence_unreachable ]; then # beneath the slow device, a multipath map (its uuid says so) whose one path is the loop device
    PATH_DOWN=$(cat "/sys/class/block/${la#/dev/}/dev")
    dmsetup create "$MAP" -u mpath-fence-fsync --table "0 $(blockdev --getsz "$la") multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1 $PATH_DOWN 1000"
    under=/dev/mapper/$MAP
  fi
  dmsetup create fence-fsync-slow --table "0 $(blockdev --getsz "$under") delay $under 0 0 $under 0 $DELAY_MS"
  mkfs.ext4 -F -q -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$SLOW"
  mount "$SLOW" "$W/a"
  echo 0 > "$W/ack"; rm -f "$W/go"
  node -e "$WRITER" "$W/a/log" "$W/ack" "$W/go" & writer=$!
  local said; said=$("$@")
  timeout 60 tail --pid="$writer" -f /dev/null || die "the writer still writes after the fence"
  lb=$(losetup --find --show "$W/img")
  fsck -a "$lb" >"$W/fsck.out" 2>&1 || true
  mount "$lb" "$W/b"
  local acked found; acked=$(cat "$W/ack") found=$(grep -c '^a ' "$W/b/log" || true)
  if [ "$found" -lt "$acked" ]; then
    { echo "--- lost: fsck"; cat "$W/fsck.out"; echo "--- tail of log"; tail -c 80 "$W/b/log" | od -c | tail -6; stat -c 'size %s' "$W/b/log"; echo "--- watchdog"; cat "$W/watchdog.log" 2>/dev/null; dmesg | tail -15; } | sed 's/^/fence-fsync debug: /' >&2
  fi
  echo "$acked $found $said"
  umount "$W/b"; losetup -d "$lb"; umount "$W/a"
  dmsetup remove fence-fsync-slow
  if [ "$under" != "$la" ]; then dmsetup remove "$MAP"; fi
  losetup -d "$la"
}

run_mode() { # $1: mode name, $2: trials, then the fence; UNTIL_LOST=1: stop at the first loss
  local mode=$1 trials=$2 lost=0 unfrozen=0 held=0 i acked found said; shift 2
  for i in $(seq 1 "$trials"); do
    read -r acked found said <<< "$(trial "$@")"
    echo "fence-fsync $mode trial $i: acknowledged $acked, found $found $said" >&2
    [ "$found" -ge "$acked" ] || lost=$((lost + 1))
    [ -z "$said" ] || unfrozen=$((unfrozen + 1))
    case $said in *'before the path returned: no'*) held=$((held + 1)) ;; esac
    if [ "${UNTIL_LOST:-0}" = 1 ] && [ "$lost" -gt 0 ]; then trials=$i; break; fi
  done
  result "${mode}_trials=$trials" "${mode}_lost=$lost" "${mode}_without_freeze=$unfrozen" "${mode}_writer_held=$held"
}

UNTIL_LOST=1 run_mode logflush "${FENCE_FSYNC_BASELINE_TRIALS:-6}" fence_xfs_io 'shutdown -f'
run_mode nologflush "${FENCE_FSYNC_NOLOGFLUSH_TRIALS:-0}" fence_xfs_io shutdown
run_mode ballast "${FENCE_FSYNC_TRIALS:-5}" fence_ballast
run_mode unreachable "${FENCE_FSYNC_UNREACHABLE_TRIALS:-3}" fence_unreachable
