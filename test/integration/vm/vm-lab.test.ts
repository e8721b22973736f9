import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireVmLab, runInVm, type VmRun } from '../../lab/vm.js';

// The VM lab's own smoke test: a real kernel logs in to a real iSCSI target over two portals and
// multipathd builds one map over both paths; two VMs run at once, each on qemu's user-mode net.

const TARGET = 'iqn.2026-11.dev.ballast:vmlab-target';

/**
 * Inside one VM: tgtd serving one LUN, two sessions, one multipath map, ext4 on it, then teardown.
 * Every exec costs ~0.1-0.3 s under emulation, so the loops use bash builtins only.
 */
const MULTIPATH_SCRIPT = `
set -euo pipefail
shopt -s nullglob
result() { echo "RESULT $1=$2"; echo "RESULT $1=$2" >> "$RESULTS"; }
waitfor() { local n=0; until eval "$1"; do n=$((n + 1)); [ $n -lt 100 ] || { echo "timed out: $1"; return 1; }; sleep 0.3; done; }
# The sd and multipath dm devices, by kernel name.
sds() { sds=(); for d in /sys/block/sd*; do sds+=("\${d##*/}"); done; }
mpaths() { mpaths=(); local uuid; for d in /sys/block/dm-*; do read -r uuid < $d/dm/uuid; [[ $uuid == mpath-* ]] && mpaths+=("\${d##*/}"); done; true; }
slaves() { slaves=(/sys/block/$1/slaves/*); slaves=("\${slaves[@]##*/}"); }

tgtd -f >$BALLAST_VM_LOGS/tgtd.log 2>&1 &
waitfor 'tgtadm --lld iscsi --op show --mode target >/dev/null 2>&1'
truncate -s 64M /tmp/lun.img
tgtadm --lld iscsi --op new --mode target --tid 1 -T ${TARGET}
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b /tmp/lun.img
tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL

for portal in 127.0.0.1:3260 127.0.0.2:3260; do
  iscsiadm -m node -T ${TARGET} -p $portal -o new >/dev/null
  iscsiadm -m node -T ${TARGET} -p $portal --login
done
result sessions "$(iscsiadm -m session | wc -l)"

waitfor 'sds; [ \${#sds[@]} -eq 2 ]'
result paths \${#sds[@]}
for sd in "\${sds[@]}"; do result "wwid_$sd" "$(/lib/udev/scsi_id -g -u /dev/$sd)"; done
wwid=$(/lib/udev/scsi_id -g -u /dev/\${sds[0]})

waitfor 'mpaths; [ \${#mpaths[@]} -ge 1 ] && slaves \${mpaths[0]} && [ \${#slaves[@]} -eq 2 ]'
dm=\${mpaths[0]}
result dm_maps \${#mpaths[@]}
result dm_uuid "$(< /sys/block/$dm/dm/uuid)"
result dm_name "$(< /sys/block/$dm/dm/name)"
result dm_slaves "\${slaves[*]}"
multipath -ll

waitfor "[ -b /dev/mapper/$wwid ]"
mkfs.ext4 -q /dev/mapper/$wwid
mkdir -p /tmp/mnt
mount /dev/mapper/$wwid /tmp/mnt
head -c 1048576 /dev/urandom > /tmp/data
cp /tmp/data /tmp/mnt/data
umount /tmp/mnt
echo 3 > /proc/sys/vm/drop_caches
mount /dev/mapper/$wwid /tmp/mnt
result written "$(sha256sum < /tmp/data)"
result read "$(sha256sum < /tmp/mnt/data)"
umount /tmp/mnt

multipath -f $wwid
for sd in "\${sds[@]}"; do echo 1 > /sys/block/$sd/device/delete; done
iscsiadm -m node -T ${TARGET} --logout
rc=0; iscsiadm -m session >/dev/null 2>&1 || rc=$?
result session_rc_after $rc
mpaths; sds
result dm_maps_after \${#mpaths[@]}
result paths_after \${#sds[@]}
`;

function expectSuccess(run: VmRun): void {
  if (run.exitCode !== 0) {
    throw new Error(`VM failed (exit ${run.exitCode}, timed out ${run.timedOut}, ${run.durationMs} ms):\n${run.console}`);
  }
}

function results(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/^RESULT ([a-z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.trim()]));
}

describe('the VM lab', () => {
  beforeAll(() => requireVmLab());

  it('logs in to tgtd over two portals and builds one multipath map over both paths', async () => {
    const share = mkdtempSync(join(tmpdir(), 'ballast-vmlab-share-'));
    try {
      const run = await runInVm({
        name: 'multipath',
        timeoutMs: 150_000,
        shareDir: share,
        script: `export RESULTS=${share}/results.txt\n${MULTIPATH_SCRIPT}`,
      });
      expectSuccess(run);
      console.log(`VM lab: one VM (iSCSI + multipath) ran ${run.durationMs} ms; ${run.console.match(/ballast-vm: .* ready .*$/m)?.[0]}`);
      // Read through the 9p share, which this also tests.
      const r = results(readFileSync(join(share, 'results.txt'), 'utf8'));
      expect(r.sessions).toBe('2');
      expect(r.paths).toBe('2');
      expect(r.wwid_sda).toMatch(/^3[0-9a-f]{32}$/);
      expect(r.wwid_sdb).toBe(r.wwid_sda);
      expect(r.dm_maps).toBe('1');
      expect(r.dm_uuid).toBe(`mpath-${r.wwid_sda}`);
      expect(r.dm_name).toBe(r.wwid_sda);
      expect(r.dm_slaves).toBe('sda sdb');
      expect(r.written).toMatch(/^[0-9a-f]{64} +-$/);
      expect(r.read).toBe(r.written);
      expect(r.session_rc_after).toBe('21'); // iscsiadm: no active sessions
      expect(r.dm_maps_after).toBe('0');
      expect(r.paths_after).toBe('0');
    } finally {
      rmSync(share, { recursive: true, force: true });
    }
  }, 170_000);

  it('runs two VMs at once, each with its own IQN and the host loopback on 10.0.2.2', async () => {
    const seen: string[] = [];
    const server: Server = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.end('ok\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const script = String.raw`
set -eu
echo "IQN=$BALLAST_VM_IQN"
echo "INITIATOR=$(cat /etc/iscsi/initiatorname.iscsi)"
echo "KERNEL=$(uname -r)"
echo "HOSTNAME=$(hostname)"
echo "HTTP=$(curl -sf --max-time 20 http://10.0.2.2:${port}/from/$BALLAST_VM_NAME)"
`;
    try {
      const started = Date.now();
      const runs = await Promise.all(['alpha', 'beta'].map((name) => runInVm({ name, network: true, timeoutMs: 150_000, script })));
      console.log(`VM lab: two concurrent VMs ran ${runs.map((r) => `${r.durationMs} ms (${r.console.match(/ready at \S+/)?.[0]})`).join(' and ')}, ${Date.now() - started} ms wall`);
      runs.forEach(expectSuccess);
      const [alpha, beta] = runs.map((run) => Object.fromEntries([...run.console.matchAll(/^([A-Z]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!])));
      expect(alpha!.IQN).toBe('iqn.2026-11.dev.ballast:alpha');
      expect(beta!.IQN).toBe('iqn.2026-11.dev.ballast:beta');
      expect(alpha!.INITIATOR).toBe(`InitiatorName=${alpha!.IQN}`);
      expect(beta!.INITIATOR).toBe(`InitiatorName=${beta!.IQN}`);
      expect(alpha!.HOSTNAME).toBe('alpha');
      expect(beta!.HOSTNAME).toBe('beta');
      expect(existsSync(`/lib/modules/${alpha!.KERNEL}`)).toBe(true);
      expect(beta!.KERNEL).toBe(alpha!.KERNEL);
      expect(alpha!.HTTP).toBe('ok');
      expect(beta!.HTTP).toBe('ok');
      expect(seen.sort()).toEqual(['/from/alpha', '/from/beta']);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }, 170_000);
});
