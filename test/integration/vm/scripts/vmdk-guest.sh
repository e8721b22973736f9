# The guest side of a vSphere virtual disk, with a disk that qemu hot-adds to a virtio-scsi
# controller standing in for ReconfigVM_Task. Run by vmdk-guest.test.ts, which watches the
# shared dir ($VMDK_SHARE): the guest writes NAME-request, the test changes the VM's hardware
# through qemu's monitor and answers NAME-done (or NAME-failed with the reason).
#   attach: drive_add + device_add scsi-hd with wwn=0x$VMDK_UUID. The node script asks for it
#           right before attach(), which then waits for the disk as it would for one vCenter
#           is adding.
#   detach: device_del, after the attacher deleted the disk in the guest (the vmdk driver's order).
# Every line the test asserts on starts with "RESULT ".
set -u
shopt -s nullglob
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"

# The lab's common setup runs multipathd with find_multipaths no, which would claim the new
# disk (mkfs on /dev/sdX then fails with EBUSY); vSphere guests do not multipath their vmdks.
multipathd shutdown >/dev/null 2>&1 || true
modprobe -a virtio_scsi sd_mod || die "modprobe virtio_scsi sd_mod"
udevadm settle

request() { # request NAME: asks the test on the host, waits for its answer (60 s)
  : > "$VMDK_SHARE/$1-request"
  for _ in $(seq 600); do
    [ -e "$VMDK_SHARE/$1-done" ] && return 0
    [ -e "$VMDK_SHARE/$1-failed" ] && die "the host could not $1: $(cat "$VMDK_SHARE/$1-failed")"
    sleep 0.1
  done
  die "no answer from the host to $1-request"
}
disk_with_wwid() { # the sd disk whose wwid is $1, if any
  local d w
  for d in /sys/block/sd*; do read -r w < "$d/device/wwid" 2>/dev/null && [ "$w" = "$1" ] && echo "${d##*/}"; done
  return 0
}
rescan_all() { local h; for h in /sys/class/scsi_host/host*/scan; do echo '- - -' > "$h" 2>/dev/null || true; done; }

# The attacher from this checkout's build, through its real Exec (execa) and sysfs.
cat > "$BALLAST_RUN/vmdk.mjs" <<'JS'
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
const src = process.env.BALLAST_SRC;
const { VmdkAttacher } = await import(`${src}/dist/attach/vmdk/vmdk-attacher.js`);
const { CommandRunner } = await import(`${src}/dist/exec.js`);
const { createLogger } = await import(`${src}/dist/log.js`);

const [mode, uuid, waitMs] = process.argv.slice(2);
const log = createLogger(process.env.VMDK_LOG ?? 'info');
const exp = { transport: 'vmdk', diskUuid: uuid, file: `[lab] ballast/${mode}/disk.vmdk` };
const attacher = new VmdkAttacher(new CommandRunner(log), log, { commandTimeoutMs: 30_000, deviceWaitMs: Number(waitMs) });
const result = (line) => console.error(`RESULT ${line}`);
const since = (t0) => Math.round(performance.now() - t0);
const run = (...argv) => execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] }).toString();
const sha = (data) => createHash('sha256').update(data).digest('hex');

if (mode === 'absent') {
  // A UUID no disk has: every SCSI host is scanned, again at 2 s, and it fails at the bound.
  const t0 = performance.now();
  try {
    result(`absent_device=${await attacher.attach(exp)}`);
  } catch (err) {
    result(`absent_ms=${since(t0)} absent_error=${err.name}`);
    console.error(`absent: ${err.message}`);
    const ok = err.message.includes(uuid) && err.message.includes(exp.file) && err.message.includes(`within ${Number(waitMs) / 1000} s`) && err.message.includes('disk.EnableUUID=TRUE');
    result(`absent_message_ok=${ok ? 'yes' : 'no'}`);
  }
} else {
  const { vmUuid } = await attacher.identify();
  result(`vm_uuid=${vmUuid}`);
  // As the vmdk driver's ReconfigVM_Task: the host hot-adds the disk while attach() waits for it.
  let t0 = performance.now();
  writeFileSync(`${process.env.VMDK_SHARE}/attach-request`, '');
  const device = await attacher.attach(exp);
  const name = device.slice('/dev/'.length);
  result(`find_ms=${since(t0)} device=${device}`);
  result(`wwid=${readFileSync(`/sys/block/${name}/device/wwid`, 'utf8').trim()}`);
  t0 = performance.now();
  result(`again=${await attacher.attach(exp)} again_ms=${since(t0)}`);
  result(`attached=${await attacher.isAttached(exp, device)}`);
  run('udevadm', 'settle');
  result(`by_id=${run('readlink', '-f', `/dev/disk/by-id/wwn-0x${uuid}`).trim()}`);

  run('mkfs.ext4', '-q', '-F', device);
  const mnt = '/tmp/vmdk-mnt';
  mkdirSync(mnt, { recursive: true });
  const data = randomBytes(4 << 20);
  run('mount', device, mnt);
  writeFileSync(`${mnt}/data`, data);
  run('umount', mnt);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  run('mount', device, mnt);
  result(`sha_written=${sha(data)} sha_read=${sha(readFileSync(`${mnt}/data`))}`);
  run('umount', mnt); // the caller's job, before detach

  t0 = performance.now();
  await attacher.detach(exp, device);
  result(`detach_ms=${since(t0)}`);
  result(`gone_after_detach=${existsSync(`/sys/block/${name}`) ? 'no' : 'yes'}`);
  result(`attached_after_detach=${await attacher.isAttached(exp, device)}`);
  t0 = performance.now();
  await attacher.detach(exp, device);
  result(`detach_again_ms=${since(t0)}`);
}
JS

result "hosts=$(ls /sys/class/scsi_host | tr '\n' ,)"
node "$BALLAST_RUN/vmdk.mjs" absent "$VMDK_ABSENT_UUID" 5000 || die "the absent-disk case crashed"

if ! VMDK_LOG=debug node "$BALLAST_RUN/vmdk.mjs" io "$VMDK_UUID" 30000; then
  [ -e "$VMDK_SHARE/attach-failed" ] && die "the host could not attach: $(cat "$VMDK_SHARE/attach-failed")"
  die "attach, I/O and detach"
fi

# The driver removes the disk from the VM only after detach returned: then no scan brings it back.
request detach
t0=$(date +%s%N)
rescan_all
udevadm settle
result "rescan_after_unplug_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
left=$(disk_with_wwid "naa.$VMDK_UUID")
result "gone_after_unplug=$([ -z "$left" ] && echo yes || echo "no:$left")"
result "disks_end=$(ls /sys/block | grep -c '^sd' || true)"
exit 0
