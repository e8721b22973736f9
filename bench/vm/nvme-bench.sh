# The NVMe/TCP benchmark, inside one VM: the powerflex backend behind its simulator with nvmet
# as the array (powerflex-nvme.mjs: lease, map, NvmeTcpAttacher over two portals), against the
# same namespace connected by hand (nvme connect to both portals). Attach and detach times, and
# sequential direct writes to the raw namespace.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
. "$BALLAST_SRC/bench/vm/bench-lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
MB=${BENCH_WRITE_MB:-96}
modprobe -a configfs nvmet nvmet-tcp nvme-tcp nvme-fabrics || die "nvme modules"
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
PF_IMAGES=/srv/powerflex
mkdir -p "$PF_IMAGES" && mount -t tmpfs -o size=$((MB + 200))M tmpfs "$PF_IMAGES" || die "image dir"
export PF_IMAGES PF_PORTALS=127.0.0.1:4421,127.0.0.2:4421
attacher_start "$BALLAST_SRC/test/integration/vm/scripts/powerflex-nvme.mjs"
ac create b0 1
[ "$AC_ok" = 1 ] || die "create: $AC_error"
# head_of NGUID: the namespace's multipath head (nvmeXnY; the per-path nvmeXcYnZ have no /dev node)
head_of() { for d in /sys/block/nvme*; do [[ ${d##*/} =~ ^nvme[0-9]+n[0-9]+$ ]] && [ "$(tr -d '-' < "$d/nguid" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return; }; done; }
for r in $(seq "$ROUNDS"); do
  ac attach b0
  [ "$AC_ok" = 1 ] || die "attach: $AC_error"
  result "attach_${r}_ms=$AC_ms"
  result "ballast_write_mbps_$r=$(mbps if=/dev/zero of="$AC_device" oflag=direct)"
  ac detach b0 "$AC_device"
  result "detach_${r}_ms=$AC_ms"

  # The same namespace by hand: mapped by the simulator, connected with nvme connect on both portals.
  ac map b0
  NQN=$AC_nqn NGUID=$AC_nguid
  t0=$(date +%s%N)
  for p in 127.0.0.1 127.0.0.2; do nvme connect -t tcp -a $p -s 4421 -n "$NQN" >/dev/null || die "nvme connect $p"; done
  for _ in $(seq 100); do dev=$(head_of "$NGUID"); [ -n "$dev" ] && break; sleep 0.1; done
  [ -n "$dev" ] || die "no namespace by hand"
  result "byhand_attach_${r}_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
  [ -b "$dev" ] || die "by hand: $dev is not a block device"
  result "byhand_write_mbps_$r=$(mbps if=/dev/zero of="$dev" oflag=direct)"
  t0=$(date +%s%N)
  nvme disconnect -n "$NQN" >/dev/null
  result "byhand_detach_${r}_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
  ac unmap b0
done
ac destroy b0
ac stop
attacher_stop
result "left_controllers=$(ls /sys/class/nvme 2>/dev/null | wc -l)"
exit 0
